"""The sandbox's ``striptags`` gives markupsafe's result, whatever the text and wherever it is
cut into pieces: tags, unclosed ``<``, comments, references, every kind of whitespace."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from rulekit.expr import striptags as module
from rulekit.expr.budget import OverBudget
from rulekit.expr.striptags import striptags

ATOMS = [
    "<", ">", "<!--", "-->", "<!-->", "<b>", "</p >", "&", "&amp", "&amp;", "&#", "&#x", "&#X",
    "0", "1", "4", "6", "9", "a", "f", "F", "x", ";", "#", "-", "!", "é", "&nbsp;", "&notin",
    "&NotEqualTilde;", "&#128512;", "&#x1F600", "&#0;", "&#xD800;", "&#128;", "&#x110000;",
    " ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u2028", "\u3000",
]  # fmt: skip


def _markupsafe(text: str) -> str | None:
    try:
        return Markup(text).striptags()
    except ValueError:  # a decimal reference of over 4,300 digits
        return None


@pytest.mark.slow
@settings(max_examples=3_000, deadline=None)
@given(
    st.lists(st.sampled_from(ATOMS) | st.text(max_size=3), max_size=40).map("".join),
    st.sampled_from([1, 2, 5, 8_192]),
)
def test_striptags_is_markupsafes(text: str, chunk: int) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "_CHUNK", chunk)  # references and words across every cut
        assert striptags(text) == _markupsafe(text)


@pytest.mark.parametrize(
    "text",
    [
        "Main &raquo;\t<em>About</em>",
        "a<!-- <b> -->b <!-- unclosed <i>c</i>",
        "x <b unclosed &amp; y",
        " \x1c&#32;&nbsp;<br>&#x" + "0" * 20_000 + "41;&#" + "0" * 3_000 + "66" + " " * 9_000,
        "&" + "#" * 9_000 + "&#x" + "f" * 9_000 + "&" + "a" * 9_000 + ";&#" + "1" * 4_000,
        "<p>" + "&NotEqualTilde;\n" * 2_000 + "</p>" + "<>" * 9_000 + "&lt;b&gt; &amp" * 900,
    ],
)
def test_long_references_and_runs_across_pieces(text: str) -> None:
    assert striptags(text) == Markup(text).striptags()


def test_a_decimal_reference_past_pythons_int_limit_is_u_fffd() -> None:
    text = "a &#" + "1" * 5_000 + "; b"
    with pytest.raises(ValueError):
        Markup(text).striptags()
    assert striptags(text) == "a \ufffd b"


def test_a_result_over_the_limit_is_refused() -> None:
    assert striptags("<b>a</b> " * 10, most=20) == " ".join(["a"] * 10)
    with pytest.raises(OverBudget, match="'striptags'"):
        striptags("<b>a</b> " * 11, most=20)
