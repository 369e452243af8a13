"""Client values never become markup: hostile values in every position of every markup target,
rendered by the real engine, sent by the real SDK clients to the fake Slack and Telegram, and
read back with independent readers (``markup_readers``).

Each message is compared with the same rules rendered for a harmless value (``TOKEN``): read
as the service reads it, the message must have exactly the same markup, with the client's
text, intact, wherever the token was.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from action_helpers import run
from markup_readers import read_html, read_markdown_v2, read_mrkdwn

from rulekit.actions.base import ActionContext
from rulekit.event import Event

TOKEN = "QqTOKENqQ"

HOSTILE = [
    "<b>bold</b> <i>it</i> <script>alert(1)</script>",
    '"><script>alert(1)</script>',
    "' onmouseover='alert(1)' x='",
    "*bold* _it_ ~strike~ `code` ||spoiler|| __under__",
    "[x](tg://user?id=1) [y](https://evil.example)",
    "<!channel> <!here> <@U0BOSS> <#C0ALL>",
    "<https://evil.example|click here>",
    "&amp; &lt;b&gt; &#60;i&#62; & &amp",
    "```pre``` \\` \\\\ \\* \\",
    "_*[]()~`>#+-=|{}.!\\ all specials",
    "zero\u200bwidth \u202eevil\u202c \u2066bidi\u2069 \ufeffbom",
    "replaced \ufffd char, emoji 👍🏽, combining e\u0301",
    "line\nbreak\r\n> quote\n>> more",
    "a|b|c > d",
]

IDS = [f"{i}:{text[:16]!r}" for i, text in enumerate(HOSTILE)]


def _event(value: str) -> Event:
    return Event(
        channel="online-chat",
        event="created",
        conversation={"id": "conv-1", "status": "open"},
        client={"id": "client-1", "name": value},
        message={"id": "m1", "text": "hello", "author": "client"},
    )


def _config(fake_slack: Any, fake_telegram: Any) -> str:
    return (
        "channels: {online-chat: {provider: webhook}}\n"
        "integrations:\n"
        f"  slack: {{token: {fake_slack.token}, base_url: '{fake_slack.base_url}'}}\n"
        f"  telegram: {{token: '{fake_telegram.token}', base_url: '{fake_telegram.base_url}'}}\n"
    )


def send(engine: Any, value: str) -> None:
    """Plan the engine's one action for a client named ``value`` and execute it for real."""
    event = _event(value)
    plan = engine.evaluate(event, explain=True)
    assert plan.errors == []
    [planned] = plan
    action = engine.actions[planned.action]
    context = ActionContext(event=event, config=engine.config)
    run(action, lambda: action.execute(planned.model, context))


def _rules(action: str, params: dict[str, Any]) -> str:
    return f"- name: t\n  on: {{channel: online-chat}}\n  do:\n    - {action}: {json.dumps(params)}\n"


def _swap(events: Any, value: str, in_links: str | None = None) -> Any:
    """The token's events with the token replaced by ``value`` (by ``in_links`` in link
    targets, where Slack needs ``|`` percent-encoded)."""
    if isinstance(events, str):
        return events.replace(TOKEN, value)
    if isinstance(events, tuple) and events[:1] == ("link",) and in_links is not None:
        return ("link", events[1].replace(TOKEN, in_links), _swap(events[2], value))
    if isinstance(events, list | tuple):
        return type(events)(_swap(item, value, in_links) for item in events)
    return events


# Telegram ---------------------------------------------------------------------------------------

V = "{{ client.name }}"
HTML = (
    f"<b>{V}</b> {V} <i><u>{V}</u></i> <s>{{{{ client.name|e }}}}</s>"
    f' <a href="https://x.example/c/{V}?q={V}">{V}</a>'
    f" <a href='https://x.example/{V}'>single</a> <code>{V}</code>"
    f' <pre><code class="language-{V}">{V}</code></pre>'
    f" <tg-spoiler>{V}</tg-spoiler> <blockquote>{V}</blockquote>"
)
MARKDOWN_V2 = (
    f"*{V}* {V} _{V}_ __{V}__ ~{V}~ ||{V}|| `{V}` ```\n{V}\n```"
    f" [{V}](https://x.example/c/{V}) \\{V} *{{{{ client.name|e }}}}*"
)


@pytest.fixture
def telegram_engines(build_engine, fake_slack, fake_telegram):
    config = _config(fake_slack, fake_telegram)
    return {
        mode: build_engine(
            _rules("telegram", {"chat_id": "-100", "parse_mode": mode, "text": text}), config
        )
        for mode, text in (("HTML", HTML), ("MarkdownV2", MARKDOWN_V2))
    }


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_telegram_html_gets_client_values_as_text_in_every_position(
    telegram_engines, fake_telegram, value
):
    send(telegram_engines["HTML"], TOKEN)
    send(telegram_engines["HTML"], value)
    harmless, hostile = fake_telegram.messages()
    assert hostile.parse_mode == "HTML"
    # same tags, same attributes; the client's text in text and attribute values, intact
    assert read_html(hostile.text) == _swap(read_html(harmless.text), value)


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_telegram_markdown_v2_gets_client_values_as_text_in_every_position(
    telegram_engines, fake_telegram, value
):
    send(telegram_engines["MarkdownV2"], TOKEN)
    send(telegram_engines["MarkdownV2"], value)
    harmless, hostile = fake_telegram.messages()
    # same entities; every special character of the value escaped for where it is
    assert read_markdown_v2(hostile.text) == _swap(read_markdown_v2(harmless.text), value)


def test_a_templated_parse_mode_still_escapes(build_engine, fake_slack, fake_telegram):
    params = {"chat_id": "-100", "parse_mode": "{{ 'HTML' }}", "text": f"<b>{V}</b>"}
    engine = build_engine(_rules("telegram", params), _config(fake_slack, fake_telegram))
    send(engine, '<a href="tg://user?id=1">x</a>')
    [sent] = fake_telegram.messages()
    assert sent.parse_mode == "HTML"
    assert read_html(sent.text) == [
        ("start", "b", ()),
        ("text", '<a href="tg://user?id=1">x</a>'),
        ("end", "b"),
    ]


# Slack ------------------------------------------------------------------------------------------

SLACK = {
    "channel": "C0SUPPORT",
    "text": f"*{V}* {V} <https://x.example/c/{V}|{V}> <@U0AGENT> {{{{ client.name|e }}}}",
    "blocks": [
        {"type": "header", "text": {"type": "plain_text", "text": V}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*New chat* from {V} <https://x.example|{V}>"},
            "fields": [
                {"type": "mrkdwn", "text": f"*Name*\n{V}"},
                {"type": "plain_text", "text": V},
            ],
            "accessory": {
                "type": "button",
                "text": {"type": "plain_text", "text": V},
                "url": f"https://x.example/c/{V}",
                "value": V,
            },
        },
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"_{V}_"},
                {"type": "image", "image_url": "https://x.example/a.png", "alt_text": V},
            ],
        },
    ],
    "attachments": [
        {
            "fallback": V,
            "pretext": f"pre {V}",
            "title": V,
            "title_link": f"https://x.example/t/{V}",
            "text": f"<https://x.example/{V}|open> {V}",
            "fields": [{"title": V, "value": f"*{V}*", "short": True}],
        }
    ],
}
MRKDWN = [
    ("text",),
    ("blocks", 1, "text", "text"),
    ("blocks", 1, "fields", 0, "text"),
    ("blocks", 2, "elements", 0, "text"),
    ("attachments", 0, "fallback"),
    ("attachments", 0, "pretext"),
    ("attachments", 0, "title"),
    ("attachments", 0, "text"),
    ("attachments", 0, "fields", 0, "title"),
    ("attachments", 0, "fields", 0, "value"),
]
AS_IS = [  # plain text, data and links: values as they are
    ("blocks", 0, "text", "text"),
    ("blocks", 1, "fields", 1, "text"),
    ("blocks", 1, "accessory", "text", "text"),
    ("blocks", 1, "accessory", "url"),
    ("blocks", 1, "accessory", "value"),
    ("blocks", 2, "elements", 1, "alt_text"),
    ("attachments", 0, "title_link"),
]


def _at(tree: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_slack_gets_client_values_as_text_in_text_blocks_and_attachments(
    build_engine, fake_slack, fake_telegram, value
):
    engine = build_engine(_rules("slack", SLACK), _config(fake_slack, fake_telegram))
    send(engine, TOKEN)
    send(engine, value)
    harmless, hostile = (m.request.json for m in fake_slack.messages())
    for path in MRKDWN:
        # no link or mention from the value; its text intact where the token was
        expected = _swap(read_mrkdwn(_at(harmless, path)), value, value.replace("|", "%7C"))
        assert read_mrkdwn(_at(hostile, path)) == expected, path
    for path in AS_IS:
        assert _at(hostile, path) == _at(harmless, path).replace(TOKEN, value), path
    assert {m.status for m in fake_slack.messages()} == {200}
