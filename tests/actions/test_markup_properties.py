"""Property tests over arbitrary client strings: each escaper's output, read back by an
independent reader (``markup_readers``), is the input as text, with no special character
left unescaped; and the engine, for every markup target and position, sends the client's text
as text and nothing else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markup_readers import Event, read_html, read_markdown_v2, read_mrkdwn
from test_markup_escaping import HTML, MARKDOWN_V2, MRKDWN, SLACK, TOKEN, _at, _event

from rulekit.actions.telegram_markup import (
    escape_html,
    escape_markdown_v2,
    escape_markdown_v2_code,
    escape_markdown_v2_url,
)
from rulekit.engine.engine import Engine
from rulekit.escapes import escape_link_target, escape_mrkdwn

SPECIALS = "<>&\"'`*_~[]()\\|!#@:;/.=+-{} \n\r\t\u200b\u202e\ufffd"
CLIENT_TEXT = st.one_of(st.text(), st.text(alphabet=st.sampled_from(SPECIALS)))
PROPERTY = settings(max_examples=300, deadline=None)


def _normal(events: list[Event]) -> list[Event]:
    """Adjacent texts joined, empty ones dropped (an empty value leaves no text event)."""
    out: list[Event] = []
    for event in events:
        if event[0] == "text":
            if not event[1]:
                continue
            if out and out[-1][0] == "text":
                out[-1] = ("text", out[-1][1] + event[1])
                continue
        out.append(event)
    return out


def _text(s: str) -> list[Event]:
    return [("text", s)] if s else []


# each escaper, read back --------------------------------------------------------------------


@pytest.mark.slow
@PROPERTY
@given(CLIENT_TEXT)
def test_html_escaping_reads_back_as_the_text_in_text_and_in_attributes(s: str) -> None:
    out = escape_html(s)
    assert not set(out) & set("<>\"'")
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt|quot|#x27);)*", out, re.S)
    assert read_html(f"<b>{out}</b>") == [("start", "b", ()), *_text(s), ("end", "b")]
    assert read_html(f"<a href=\"{out}\" title='{out}'>x</a>")[0] == (
        "start",
        "a",
        (("href", s), ("title", s)),
    )


@PROPERTY
@given(CLIENT_TEXT)
def test_markdown_v2_escaping_reads_back_as_the_text(s: str) -> None:
    assert read_markdown_v2(escape_markdown_v2(s)) == _text(s)
    assert read_markdown_v2(f"*{escape_markdown_v2(s)}*") == [
        ("open", "bold"),
        *_text(s),
        ("close", "bold"),
    ]


@PROPERTY
@given(CLIENT_TEXT)
def test_markdown_v2_code_escaping_reads_back_as_the_text(s: str) -> None:
    out = escape_markdown_v2_code(s)
    assert set(re.sub(r"\\[\\`]", "", out)).isdisjoint("`\\")  # only these two, escaped
    assert read_markdown_v2(f"`{out}`") == [("open", "code"), *_text(s), ("close", "code")]
    assert read_markdown_v2(f"```\n{out}```") == [
        ("open", "pre"),
        ("text", "\n" + s),
        ("close", "pre"),
    ]


@PROPERTY
@given(CLIENT_TEXT)
def test_markdown_v2_url_escaping_reads_back_as_the_url(s: str) -> None:
    out = escape_markdown_v2_url(s)
    assert set(re.sub(r"\\[\\)]", "", out)).isdisjoint(")\\")
    assert read_markdown_v2(f"[x](https://x.example/{out})") == [
        ("open", "link"),
        ("text", "x"),
        ("close", "link", "https://x.example/" + s),
    ]


@PROPERTY
@given(CLIENT_TEXT)
def test_mrkdwn_escaping_reads_back_as_the_text(s: str) -> None:
    out = escape_mrkdwn(s)
    assert not set(out) & set("<>")
    assert read_mrkdwn(out) == _text(s)
    assert read_mrkdwn(f"<https://x.example|{out}>") == [("link", "https://x.example", s)]


@PROPERTY
@given(CLIENT_TEXT)
def test_slack_link_target_escaping_stays_in_the_target(s: str) -> None:
    out = escape_link_target(s)
    assert read_mrkdwn(f"<https://x.example/{out}|label>") == [
        ("link", "https://x.example/" + s.replace("|", "%7C"), "label")
    ]


# the engine, every target and position ------------------------------------------------------


def _rules(action: str, params: dict[str, Any]) -> str:
    return (
        f"- name: t\n  on: {{channel: online-chat}}\n  do:\n    - {action}: {json.dumps(params)}\n"
    )


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> dict[str, Engine]:
    out = {}
    targets = {
        "HTML": _rules("telegram", {"chat_id": 1, "parse_mode": "HTML", "text": HTML}),
        "MarkdownV2": _rules(
            "telegram", {"chat_id": 1, "parse_mode": "MarkdownV2", "text": MARKDOWN_V2}
        ),
        "slack": _rules("slack", SLACK),
    }
    for name, rules in targets.items():
        folder: Path = tmp_path_factory.mktemp(name)
        (folder / "rules.yaml").write_text(rules)
        out[name] = Engine.from_path(folder, None)
    return out


def _params(engine: Engine, value: str) -> dict[str, Any]:
    plan = engine.evaluate(_event(value), explain=True)
    assert plan.errors == []
    return plan[0].params


def _swap(events: list[Event], value: str, in_links: str) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if event[0] == "link":
            target, label = event[1], event[2]
            out.append(("link", target.replace(TOKEN, in_links), label.replace(TOKEN, value)))
        else:
            out.append(
                tuple(
                    item.replace(TOKEN, value)
                    if isinstance(item, str)
                    else tuple((k, v.replace(TOKEN, value)) for k, v in item)
                    if isinstance(item, tuple)
                    else item
                    for item in event
                )
            )
    return _normal(out)


ENGINE_PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _shown(value: str) -> str:
    """``value`` as a message people read holds it: without bidi controls."""
    return value.translate(dict.fromkeys(map(ord, BIDI)))


def _check_telegram(engine: Engine, read: Any, value: str) -> None:
    harmless = _params(engine, TOKEN)["text"]
    hostile = _params(engine, value)["text"]
    shown = _shown(value)
    assert _normal(read(hostile)) == _swap(read(harmless), shown, shown)


@ENGINE_PROPERTY
@given(value=CLIENT_TEXT)
def test_any_client_text_reaches_every_html_and_slack_position_as_text(engines, value) -> None:
    _check_telegram(engines["HTML"], read_html, value)
    harmless = _params(engines["slack"], TOKEN)
    hostile = _params(engines["slack"], value)
    shown = _shown(value)
    for path in MRKDWN:
        expected = _swap(read_mrkdwn(_at(harmless, path)), shown, shown.replace("|", "%7C"))
        assert _normal(read_mrkdwn(_at(hostile, path))) == expected, path


@ENGINE_PROPERTY
@given(value=st.builds(str.__add__, st.characters(min_codepoint=1, max_codepoint=126), CLIENT_TEXT))
def test_any_client_text_reaches_every_markdown_v2_position_as_text(engines, value) -> None:
    # not empty: "_" + "" + "_" is "__", another marker, whatever the escaping; and a first
    # character Telegram can escape, since the template has "\\{{ client.name }}" (an escape of
    # whatever comes first; a backslash of its own before other characters)
    _check_telegram(engines["MarkdownV2"], read_markdown_v2, value)
