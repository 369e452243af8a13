"""YAML as people mean it: ``on`` stays a key, ``no`` stays a word, duplicates are errors."""

from __future__ import annotations

import pytest

from rulekit import yamlsource


def test_on_is_a_key_named_on() -> None:
    data = yamlsource.load("on: {channel: online-chat}\n")
    assert list(data) == ["on"]
    assert data["on"] == {"channel": "online-chat"}


@pytest.mark.parametrize("word", ["no", "off", "yes", "on", "No", "OFF", "y", "n"])
def test_yaml_11_boolean_words_stay_strings(word: str) -> None:
    data = yamlsource.load(f"text: {word}\nlist: [{word}]\n")
    assert data == {"text": word, "list": [word]}


@pytest.mark.parametrize(("text", "value"), [("true", True), ("false", False), ("True", True)])
def test_true_and_false_are_booleans(text: str, value: bool) -> None:
    assert yamlsource.load(f"enabled: {text}") == {"enabled": value}


def test_duplicate_key_is_an_error_with_its_line() -> None:
    text = "name: a\non: {channel: x}\nname: b\n"
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(text)
    assert caught.value.line == 3
    assert "duplicate key 'name'" in caught.value.message


def test_duplicate_key_in_a_nested_mapping() -> None:
    text = "- name: a\n  do:\n    - slack:\n        text: x\n        text: y\n"
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(text)
    assert caught.value.line == 5


def test_syntax_error_has_a_line() -> None:
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load("a: [1, 2\nb: 3\n")
    assert caught.value.line is not None


@pytest.mark.parametrize(
    ("text", "character"),
    [
        (b"a: 1\nb: 2\nc: \xff\n", "#x00ff"),  # not UTF-8
        (b"a: 1\nb: 2\nc: x\x00\n", "#x0000"),  # a control character YAML refuses
        ("a: 1\n\u00e9\u00e9: 2\nc: x\x07\n", "#x0007"),  # after letters of two bytes
        (b"\xef\xbb\xbfa: 1\nb: 2\nc: \x1b\n", "#x001b"),  # after a byte order mark
    ],
)
def test_a_character_yaml_refuses_is_an_error_with_its_line(text: str | bytes, character: str):
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(text)
    assert caught.value.line == 3
    assert character in caught.value.message


def test_only_safe_tags() -> None:
    with pytest.raises(yamlsource.YamlSyntaxError):
        yamlsource.load("!!python/object/apply:os.system ['true']\n")


def test_line_numbers_of_nested_paths() -> None:
    text = (
        "# a comment\n"  # 1
        "- name: first\n"  # 2
        "  do:\n"  # 3
        "    - slack:\n"  # 4
        "        channel: '#a'\n"  # 5
        "        text: hi\n"  # 6
        "- name: second\n"  # 7
        "  if:\n"  # 8
        "    - any:\n"  # 9
        "        - a\n"  # 10
        "        - b\n"  # 11
    )
    data = yamlsource.load(text)
    line_of = yamlsource.line_of
    assert line_of(data, (0,)) == 2
    assert line_of(data, (0, "do", 0, "slack", "text")) == 6
    assert line_of(data, (1, "name")) == 7
    assert line_of(data, (1, "if", 0, "any", 1)) == 11
    # a path that does not exist stops at the deepest known line
    assert line_of(data, (0, "do", 0, "slack", "missing")) == 4
    assert line_of(data, (5,)) == data.line


def _same(built: object, reference: object) -> bool:
    """Equal data, equal types and equal lines all the way down."""
    if type(built) is not type(reference):
        return False
    if isinstance(built, yamlsource.LineDict):
        assert isinstance(reference, yamlsource.LineDict)
        shape = (built.line, built.lines, list(built))
        if shape != (reference.line, reference.lines, list(reference)):
            return False
        return all(_same(built[key], reference[key]) for key in built)
    if isinstance(built, yamlsource.LineList):
        assert isinstance(reference, yamlsource.LineList)
        shape = (built.line, built.lines, len(built))
        if shape != (reference.line, reference.lines, len(reference)):
            return False
        return all(_same(a, b) for a, b in zip(built, reference, strict=True))
    return built == reference


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: [x, 'y', 2026-01-01, no, true, null, ~, 1.5, .inf, 0x1F, 1_000]\n",
        "- name: r\n  on: {channel: online-chat}\n  do:\n    - autoreply: {text: hi}\n",
        "base: &b {k: [1, 2]}\none: *b\ntwo: [*b, *b]\n",
        "bytes: !!binary aGVsbG8=\nquoted: 'true'\nempty: ''\n",
        "set: !!set {x, y}\nomap: !!omap [{a: 1}]\n",  # left to PyYAML's constructors
    ],
)
def test_loads_what_pyyaml_builds_with_the_same_lines(text: str) -> None:
    import yaml

    assert _same(yamlsource.load(text), yaml.load(text, Loader=yamlsource.Loader))


def test_an_alias_returns_the_value_built_once() -> None:
    data = yamlsource.load("a: &x [1, 2]\nb: *x\n")
    assert data["a"] is data["b"]


def test_a_long_base_60_integer_is_refused_before_it_is_computed() -> None:
    """YAML 1.1 reads ``1:30`` as 90; PyYAML computes such a number part by part on an ever
    larger integer, work growing with the square of its text (an 800 KB value in a rules file
    took 23 s of CPU). Like decimal digits, its text is limited (4,300 characters)."""
    text = "rules: [a]\nn: " + "1:" * 50_000 + "1\n"
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(text)
    assert caught.value.line == 2
    assert "cannot read this value" in caught.value.message
    longest = "1:" * (yamlsource.MAX_INT_TEXT // 2 - 1) + "1"
    assert len(longest) < yamlsource.MAX_INT_TEXT
    assert yamlsource.load(f"n: {longest}\n")["n"] > 60**2000
    assert yamlsource.load("a: 1:30\nb: -2:00:00\n") == {"a": 90, "b": -7200}


@pytest.mark.parametrize(
    ("text", "line", "where"),
    [
        (b'a: 1\nb: 2\nc: "caf\xe9"\n', 3, "byte #x00e9 at column 8"),  # Latin-1
        (b"a: 1\nb: 2\n# caf\xe9\n", 3, "byte #x00e9 at column 6"),  # in a comment
        (b"a: 1\nb: 2\nc: caf\xc3", 3, "byte #x00c3 at column 7"),  # cut at the end
        (b"\xef\xbb\xbfa: \xc3\xa9\xc3\xa9\xff\n", 1, "byte #x00ff at column 6"),  # after a BOM
        ("a: 1\nb: \u00e9\n".encode("cp1252") + b"c: \x80\n", 2, "byte #x00e9 at column 4"),
    ],
)
def test_a_file_that_is_not_utf8_says_where_it_stops_being_so(
    text: bytes, line: int, where: str
) -> None:
    """libyaml names the character after the bad byte (or ``#x-001`` at the end of the file):
    the message names the byte itself, its line and column, and what to do."""
    with pytest.raises(yamlsource.YamlSyntaxError) as caught:
        yamlsource.load(text)
    assert caught.value.line == line
    assert f"the file is not UTF-8: {where} (save it as UTF-8)" == caught.value.message


def test_utf16_with_a_byte_order_mark_is_read() -> None:
    assert yamlsource.load("a: café\n".encode("utf-16")) == {"a": "café"}
