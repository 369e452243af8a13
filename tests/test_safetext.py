"""rulekit.safetext: what terminals and log viewers get holds no character they act on."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from rulekit.safetext import UNSAFE, clip, dumps_json, escape_controls, printable, text_lines

ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF))


@given(ANY_TEXT)
def test_escaped_text_holds_no_unsafe_character(text: str) -> None:
    shown = escape_controls(text)
    assert not any(ord(char) in UNSAFE for char in shown)
    assert escape_controls(shown) == shown  # escaping twice changes nothing more
    if not any(ord(char) in UNSAFE for char in text):
        assert shown == text  # safe text is left as it is
    shown.encode("utf-8")  # lone surrogates too: always printable


@given(st.lists(ANY_TEXT, max_size=5))
def test_each_value_stays_on_its_line(lines: list[str]) -> None:
    assert text_lines(lines).split("\n") == [escape_controls(line) for line in lines] + [""]
    assert printable("\n".join(lines)).count("\n") == sum(line.count("\n") for line in lines) + (
        len(lines) - 1 if lines else 0
    )


@given(st.recursive(ANY_TEXT, lambda inner: st.lists(inner) | st.dictionaries(ANY_TEXT, inner)))
def test_json_is_valid_holds_the_values_and_prints_safely(document: object) -> None:
    text = dumps_json(document)
    assert json.loads(text) == document
    assert not any(ord(char) in UNSAFE for char in text)


def test_examples() -> None:
    shown = escape_controls("a\x1b[2J\r\n\t\x9b\u202e\ud800")
    assert shown == "a\\x1b[2J\\r\\n\\t\\x9b\\u202e\\ud800"
    assert dumps_json(["\x1b\u2028"]) == '["\\u001b\\u2028"]'
    assert clip("abcdef", 4) == "abcd…[2 more characters]"
    assert clip("abc", 4) == "abc"
