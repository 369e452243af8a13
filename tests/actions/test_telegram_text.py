"""Truncating long Telegram messages without breaking their markup."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rulekit.actions.telegram_text import ELLIPSIS, MAX_MESSAGE_LENGTH, truncate, utf16_len
from rulekit.escapes import escape_html, escape_markdown_v2

# independent checkers of the result ------------------------------------------------------------

_TAG = re.compile(r"<(/?)([a-z-]+)[^<>]*>")


def html_problems(text: str) -> list[str]:
    """What Telegram's HTML parser would reject: broken tags, broken entities, unclosed tags."""
    problems, stack, index = [], [], 0
    while index < len(text):
        char = text[index]
        if char == "<":
            match = _TAG.match(text, index)
            if not match:
                return [f"a broken tag at {index}"]
            closing, name = match.groups()
            if closing:
                if not stack or stack.pop() != name:
                    return [f"</{name}> closes nothing at {index}"]
            else:
                stack.append(name)
            index = match.end()
        elif char == "&":
            match = re.compile(r"&(#[0-9]+|#x[0-9a-fA-F]+|[a-z]+);").match(text, index)
            if not match:
                return [f"a broken entity at {index}"]
            index = match.end()
        else:
            index += 1
    if stack:
        problems.append(f"unclosed {stack}")
    return problems


def markdown_v2_problems(text: str) -> list[str]:
    """Unbalanced entity markers or a dangling escape, read the way Telegram reads them."""
    stack: list[str] = []
    index = 0
    while index < len(text):
        if text[index] == "\\":
            if index + 1 >= len(text):
                return ["a dangling backslash"]
            index += 2
            continue
        code = stack[-1] if stack and stack[-1] in ("`", "```") else None
        if code:
            if text.startswith(code, index):
                stack.pop()
                index += len(code)
            else:
                index += 1
            continue
        if text[index] == "[":
            end = text.find("](", index)
            close = text.find(")", end) if end != -1 else -1
            if end == -1 or close == -1:
                return [f"a broken link at {index}"]
            # the link's own text is checked as a piece of its own
            inner = markdown_v2_problems(text[index + 1 : end])
            if inner:
                return inner
            while text[close - 1] == "\\":
                close = text.find(")", close + 1)
            index = close + 1
            continue
        for marker in ("```", "||", "__", "`", "_", "*", "~"):
            if text.startswith(marker, index):
                if stack and stack[-1] == marker:
                    stack.pop()
                elif marker in stack:
                    return [f"{marker!r} closes out of order at {index}"]
                else:
                    stack.append(marker)
                index += len(marker)
                break
        else:
            index += 1
    return [f"unclosed {stack}"] if stack else []


def kept_prefix(original: str, result: str) -> str:
    cut = result.rfind(ELLIPSIS)
    assert cut != -1, "a truncated text ends with an ellipsis (and closers)"
    prefix = result[:cut]
    assert original.startswith(prefix)
    return prefix


# examples ------------------------------------------------------------------------------------


def test_a_text_that_fits_is_left_alone():
    text = "<b>x</b>" + "a" * 4000
    assert truncate(text, "HTML") is text
    assert truncate("x" * MAX_MESSAGE_LENGTH) == "x" * MAX_MESSAGE_LENGTH


def test_plain_text_is_cut_to_the_limit_with_an_ellipsis():
    result = truncate("x" * 5000)
    assert result == "x" * (MAX_MESSAGE_LENGTH - 1) + ELLIPSIS


@pytest.mark.parametrize("mode", [None, "none", "HTML", "MarkdownV2"])
def test_length_is_counted_in_utf16_units_like_telegram(mode):
    result = truncate("😀" * 3000, mode)  # 6000 UTF-16 units, 3000 code points
    assert utf16_len(result) <= MAX_MESSAGE_LENGTH
    assert result == "😀" * 2047 + ELLIPSIS


def test_emoji_sequences_are_not_split():
    family = "👨\u200d👩\u200d👧"
    result = truncate(family * 1000, limit=100)
    body = result.removesuffix(ELLIPSIS)
    assert body == family * (len(body) // len(family))
    accented = "e\u0301" * 100  # e + combining acute accent
    assert truncate(accented, limit=10) == "e\u0301" * 4 + ELLIPSIS


@pytest.mark.parametrize("mode", [None, "HTML", "MarkdownV2"])
@pytest.mark.parametrize(
    "cluster",
    [
        "🇩🇪",  # a flag: two regional indicators; cut between, a lone letter shows
        "1\ufe0f\u20e3",  # a keycap: U+20E3 is an enclosing mark of combining class 0
        "\u0915\u093e",  # Devanagari KA with its vowel sign AA, a spacing mark (class 0)
        "\u0e01\u0e31",  # Thai KO KAI with MAI HAN-AKAT
    ],
)
def test_a_cut_never_splits_a_flag_a_keycap_or_a_letter_from_its_marks(mode, cluster):
    for shift in range(4):
        text = "x" * shift + cluster * 2000
        body = truncate(text, mode, limit=101).removesuffix(ELLIPSIS)
        rest = body[shift:]
        assert rest == cluster * (len(rest) // len(cluster)), (shift, body[-6:])


def test_html_closes_open_tags_after_the_ellipsis():
    text = "<b>bold <i>" + "x" * 5000 + "</i></b>"
    result = truncate(text, "HTML")
    assert result.endswith(ELLIPSIS + "</i></b>")
    assert utf16_len(result) == MAX_MESSAGE_LENGTH
    assert html_problems(result) == []


@pytest.mark.parametrize("entity", ["&amp;", "&lt;", "&#128512;", "&quot;"])
def test_html_never_cuts_inside_an_entity(entity):
    for shift in range(len(entity) + 1):
        text = "a" * (4095 - shift) + entity + "tail" * 10
        result = truncate(text, "HTML")
        assert html_problems(result) == [], (shift, result[-12:])
        assert utf16_len(result) <= MAX_MESSAGE_LENGTH


def test_html_never_cuts_inside_a_tag():
    tag = '<a href="https://example.com/a?b=c&amp;d=e">'
    for shift in range(len(tag) + 1):
        text = "a" * (4090 - shift) + tag + "link text</a>" + "z" * 100
        result = truncate(text, "HTML")
        assert html_problems(result) == [], (shift, result[-60:])
        kept_prefix(text, result)


def test_html_custom_emoji_is_kept_whole_or_left_out():
    emoji = '<tg-emoji emoji-id="5368324170671202286">👍</tg-emoji>'
    text = "a" * 4080 + emoji + "b" * 100
    result = truncate(text, "HTML")
    assert "<tg-emoji" not in result or emoji in result
    assert html_problems(result) == []


def test_markdown_v2_closes_entities_and_keeps_escapes_whole():
    text = "*bold _italic " + "x\\." * 3000 + "_*"
    result = truncate(text, "MarkdownV2")
    assert result.endswith(ELLIPSIS + "_*")
    assert not kept_prefix(text, result).endswith("\\")
    assert markdown_v2_problems(result) == []


def test_markdown_v2_never_leaves_a_dangling_backslash():
    for shift in range(3):
        text = "a" * (4094 - shift) + "\\." + "b" * 20
        result = truncate(text, "MarkdownV2")
        assert markdown_v2_problems(result) == [], shift


def test_markdown_v2_underline_and_italic_closers_stay_distinct():
    text = "__under _italic " + "x" * 5000 + "_ more__"
    result = truncate(text, "MarkdownV2")
    assert result.endswith(ELLIPSIS + "_\r__")  # not "___", which Telegram would misread


def test_markdown_v2_code_and_pre_are_closed():
    code = truncate("`" + "x" * 5000 + "`", "MarkdownV2")
    assert code.endswith(ELLIPSIS + "`")
    pre = truncate("```python\n" + "print(1)\n" * 1000 + "```", "MarkdownV2")
    assert pre.endswith(ELLIPSIS + "```") and pre.startswith("```python\n")
    # inside code a "*" is text, not a marker: nothing to close for it
    assert truncate("`*" + "x" * 5000 + "`", "MarkdownV2").endswith(ELLIPSIS + "`")


def test_markdown_v2_links_are_kept_whole_or_left_out():
    link = "[the order page](https://example.com/orders/1\\)x)"
    text = "a" * 4080 + link + "b" * 50
    result = truncate(text, "MarkdownV2")
    assert result == "a" * 4080 + ELLIPSIS
    long_link = "[" + "x" * 5000 + "](https://example.com)"
    assert truncate(long_link, "MarkdownV2") == ELLIPSIS


# properties ----------------------------------------------------------------------------------

_letters = st.text(alphabet="ab <>&.!*_`[]()\\#😀é\n", min_size=1, max_size=6)


def _html_documents():
    plain = _letters.map(escape_html) | st.sampled_from(["&#128512;", "&amp;", "&quot;"])

    def wrap(children):
        tags = st.sampled_from(
            ["b", "i", "u", "s", "code", "tg-spoiler", 'a href="https://e.com/?a=1&amp;b=2"']
        )
        return st.tuples(tags, children).map(lambda t: f"<{t[0]}>x{t[1]}x</{t[0].split()[0]}>")

    return st.recursive(
        plain, lambda kids: wrap(kids) | st.lists(kids, max_size=4).map("".join), max_leaves=15
    )


def _markdown_v2_documents():
    plain = _letters.map(escape_markdown_v2)

    def wrap(children):
        markers = st.sampled_from(["*", "_", "__", "~", "||"])
        # an entity inside one of its own kind is not valid MarkdownV2
        return (
            st.tuples(markers, children)
            .filter(lambda t: t[0][0] not in t[1].replace("\\" + t[0][0], ""))
            .map(lambda t: f"{t[0]}x{t[1]}x{t[0]}")
        )

    code = _letters.map(lambda s: "`" + s.replace("\\", "\\\\").replace("`", "\\`") + "`")
    pre = _letters.map(lambda s: "```py\n" + s.replace("\\", "\\\\").replace("`", "\\`") + "```")
    link = plain.map(lambda s: f"[{s}](https://e.com/a\\)b)")
    leaf = plain | code | pre | link
    # entities side by side are kept apart: "_a_" + "_b_" would read as "__" (underline)
    return st.recursive(
        leaf, lambda kids: wrap(kids) | st.lists(kids, max_size=4).map(" ".join), max_leaves=15
    )


@settings(max_examples=200, deadline=None)
@given(_html_documents(), st.integers(min_value=1, max_value=80))
def test_html_truncation_is_always_valid_and_fits(document, limit):
    assert html_problems(document) == []
    result = truncate(document, "HTML", limit=limit)
    assert utf16_len(result) <= limit
    assert html_problems(result) == []
    if result != document:
        kept_prefix(document, result)


@settings(max_examples=200, deadline=None)
@given(_markdown_v2_documents(), st.integers(min_value=1, max_value=80))
def test_markdown_v2_truncation_is_always_valid_and_fits(document, limit):
    assert markdown_v2_problems(document) == []
    result = truncate(document, "MarkdownV2", limit=limit)
    assert utf16_len(result) <= limit
    assert markdown_v2_problems(result) == []
    if result != document:
        kept_prefix(document, result)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=1, max_value=60))
def test_plain_truncation_keeps_a_prefix(text, limit):
    result = truncate(text, None, limit=limit)
    assert utf16_len(result) <= limit
    if result != text:
        kept_prefix(text, result)


def test_a_lone_surrogate_counts_one_unit_and_is_cut_like_any_character():
    # a template's "\ud800" escape (YAML reads it so) made every reply holding it raise
    assert utf16_len("a\ud800") == 2
    assert truncate("a\ud800" * 3000, None, 10).endswith("…")


@pytest.mark.parametrize(
    "quote",
    [
        "**>quote line\n>last line, expandable||\n",
        "**>one line, expandable||\n",
        ">a ||spoiler|| in a quote\n>expandable||\n",
    ],
)
def test_markdown_v2_the_mark_of_an_expandable_quotation_opens_no_spoiler(quote):
    """``||`` at the end of a block quotation's line marks it expandable: a cut after it must
    not "close" it with another ``||``, which Telegram would read as a spoiler never closed."""
    text = quote + "a" * 5000
    result = truncate(text, "MarkdownV2")
    assert result == quote + "a" * (MAX_MESSAGE_LENGTH - len(quote) - 1) + ELLIPSIS


def test_markdown_v2_a_spoiler_open_at_the_cut_is_still_closed():
    result = truncate(">quote\n||" + "a" * 5000, "MarkdownV2")
    assert result.endswith(ELLIPSIS + "||") and utf16_len(result) <= MAX_MESSAGE_LENGTH
