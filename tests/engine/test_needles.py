"""Searching for many substrings at once (RE2 sets) finds what testing each one finds."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from scaffold import make_event, write

from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.engine.index import MIN_NEEDLE_SET
from rulekit.engine.needles import SET_BYTES, NeedleSets
from rulekit.plugins import load_plugins

ALPHABET = "abß.*İi̇😀 "
needle = st.text(alphabet=ALPHABET, min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(needles=st.lists(needle, min_size=1, max_size=30, unique=True), text=st.text(ALPHABET))
def test_every_needle_in_the_text_is_found(needles: list[str], text: str) -> None:
    found = NeedleSets(needles).found(text)
    assert sorted(found) == [i for i, n in enumerate(needles) if n in text]


def test_needles_over_several_sets_are_all_found() -> None:
    needles = [f"w{i}x" for i in range(2 * SET_BYTES // 4)]  # more bytes than one set holds
    text = " ".join(needles[::7]) + " w1"
    assert sorted(NeedleSets(needles).found(text)) == [
        i for i, n in enumerate(needles) if n in text
    ]


def test_a_bucket_of_substring_rules_matches_like_each_rule(tmp_path: Path) -> None:
    words = ["straße", "ß", "i̇", "İ", "ok", "a.b", "😀", "refund", "x"]
    assert len(words) >= MIN_NEEDLE_SET
    lines = []
    for index, word in enumerate(words):
        lines += [
            f"- name: lower {index}",
            "  on: {channel: online-chat, event: created}",
            f"  if: \"'{word}' in message.text|lower\"",
            "  do: [{autoreply: {text: x}}]",
            f"- name: as is {index}",
            "  on: {channel: online-chat, event: created}",
            f"  if: \"'{word}' in message.text\"",
            "  do: [{autoreply: {text: x}}]",
        ]
    plugins = load_plugins()
    engine = Engine.from_path(
        write(tmp_path / "r.yaml", "\n".join(lines) + "\n"),
        load_config(None, plugins),
        plugins=plugins,
    )
    texts = ["STRASSE", "Straße", "İstanbul", "A.B OK 😀", "nothing", "a\ud800b refund", None]
    for text in texts:
        expected = []
        for index, word in enumerate(words):
            if text is not None and word in text.lower():
                expected.append(f"lower {index}")
            if text is not None and word in text:
                expected.append(f"as is {index}")
        fired = [a.rule for a in engine.evaluate(make_event(message={"text": text}))]
        assert sorted(fired) == sorted(expected), text
