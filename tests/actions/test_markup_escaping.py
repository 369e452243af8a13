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
    "@channel @here @everyone #general",
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
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
"""The bidi controls: a message people read gets a value without them."""


def shown(value: str) -> str:
    """``value`` as a message people read holds it: without bidi controls."""
    return value.translate(dict.fromkeys(map(ord, BIDI)))


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
    return (
        f"- name: t\n  on: {{channel: online-chat}}\n  do:\n    - {action}: {json.dumps(params)}\n"
    )


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
    assert read_html(hostile.text) == _swap(read_html(harmless.text), shown(value))


@pytest.mark.parametrize("value", HOSTILE, ids=IDS)
def test_telegram_markdown_v2_gets_client_values_as_text_in_every_position(
    telegram_engines, fake_telegram, value
):
    send(telegram_engines["MarkdownV2"], TOKEN)
    send(telegram_engines["MarkdownV2"], value)
    harmless, hostile = fake_telegram.messages()
    # same entities; every special character of the value escaped for where it is
    assert read_markdown_v2(hostile.text) == _swap(read_markdown_v2(harmless.text), shown(value))


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
        expected = _swap(
            read_mrkdwn(_at(harmless, path)), shown(value), shown(value).replace("|", "%7C")
        )
        assert read_mrkdwn(_at(hostile, path)) == expected, path
    for path in AS_IS:
        assert _at(hostile, path) == _at(harmless, path).replace(TOKEN, shown(value)), path
    for path in MRKDWN:
        if path[0] == "blocks":  # a value's plain "@here" or "#general" is not parsed either
            assert _at(hostile, path[:-1])["verbatim"] is True, path
    assert {m.status for m in fake_slack.messages()} == {200}


# link targets and positions no escaping can make safe -------------------------------------------

UNSAFE_LINKS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "\x01javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "evil.example/login",
    "//evil.example/login",
]
LINK_POSITIONS = {
    "telegram HTML": ("telegram", {"parse_mode": "HTML", "text": f'<a href="{V}">open</a>'}),
    "telegram HTML, single quotes": (
        "telegram",
        {"parse_mode": "HTML", "text": f"<a href='{V}'>open</a>"},
    ),
    "telegram MarkdownV2": ("telegram", {"parse_mode": "MarkdownV2", "text": f"[open]({V})"}),
    "slack text": ("slack", {"text": f"<{V}|open>"}),
    "slack button": (
        "slack",
        {
            "text": "x",
            "blocks": [
                {
                    "type": "actions",
                    "elements": [
                        {"type": "button", "text": {"type": "plain_text", "text": "go"}, "url": V}
                    ],
                }
            ],
        },
    ),
    "slack attachment": ("slack", {"text": "x", "attachments": [{"title_link": V}]}),
}
DESTINATION = {"telegram": {"chat_id": "-100"}, "slack": {"channel": "C0SUPPORT"}}


def _link_engine(build_engine, config: str, position: str):
    action, params = LINK_POSITIONS[position]
    return build_engine(_rules(action, {**DESTINATION[action], **params}), config)


@pytest.mark.parametrize("position", LINK_POSITIONS)
def test_a_client_value_may_make_web_links_only(build_engine, fake_slack, fake_telegram, position):
    engine = _link_engine(build_engine, _config(fake_slack, fake_telegram), position)
    for url in UNSAFE_LINKS:
        plan = engine.evaluate(_event(url), explain=True)
        assert list(plan) == [], (position, url)
        [error] = plan.errors
        assert "a value would make a link target a" in error, error
        assert "values may only make http, https" in error, error
    extra = "tg://resolve?domain=rulekit" if position.startswith("telegram") else "mailto:a@b.c"
    for url in ("https://ok.example/a?b=c&d=e", "http://ok.example", extra):
        send(engine, url)
    sent = fake_telegram.messages() if position.startswith("telegram") else fake_slack.messages()
    assert len(sent) == 3 and {m.status for m in sent} == {200}


@pytest.mark.parametrize("position", [p for p in LINK_POSITIONS if p.startswith("telegram")])
def test_a_client_value_cannot_make_a_telegram_mention(build_engine, position):
    """``tg://user?id=`` notifies the user it names, as ``<@U123>`` would in Slack: a value
    may make Telegram's other links (``tg://resolve``), not that one; the template may."""
    engine = _link_engine(build_engine, None, position)
    for url in ("tg://user?id=1", "TG://User?id=1", " tg:user?id=1", "tg:/\t/user?id=1"):
        plan = engine.evaluate(_event(url), explain=True)
        assert list(plan) == [], (position, url)
        assert "a value would make a Telegram mention" in plan.errors[0], plan.errors
    assert list(engine.evaluate(_event("tg://resolve?domain=users"), explain=True))
    text = '<a href="tg://user?id={{ client.name }}">boss</a>'
    own = build_engine(_rules("telegram", {"chat_id": 1, "parse_mode": "HTML", "text": text}))
    assert list(own.evaluate(_event("42"), explain=True))


def test_a_link_scheme_written_in_the_template_is_kept_and_the_value_stays_inside(build_engine):
    text = f'<a href="ftp://files/{V}">f</a>'
    engine = build_engine(_rules("telegram", {"chat_id": 1, "parse_mode": "HTML", "text": text}))
    plan = engine.evaluate(_event('javascript:" onclick="alert(1)'), explain=True)
    assert plan.errors == []
    assert read_html(plan[0].params["text"]) == [
        ("start", "a", (("href", 'ftp://files/javascript:" onclick="alert(1)'),)),
        ("text", "f"),
        ("end", "a"),
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"<a href={V}>x</a>",  # an unquoted attribute
        f"<{V}>x</b>",  # a tag name
        f'<a {V}="x">x</a>',  # an attribute name
        f'<a href="https://x" {V}>x</a>',  # between attributes
    ],
)
def test_a_value_inside_an_html_tag_outside_quotes_is_refused(build_engine, text):
    engine = build_engine(_rules("telegram", {"chat_id": 1, "parse_mode": "HTML", "text": text}))
    plan = engine.evaluate(_event("b onclick=alert(1)"), explain=True)
    assert list(plan) == []
    [error] = plan.errors
    assert "a value inside an HTML tag must be in a quoted attribute value" in error


# values built in the template ---------------------------------------------------------------


def _planned_text(build_engine, mode: str, text: str, value: str) -> str:
    engine = build_engine(_rules("telegram", {"chat_id": 1, "parse_mode": mode, "text": text}))
    plan = engine.evaluate(_event(value), explain=True)
    assert plan.errors == []
    return plan[0].params["text"]


def test_a_value_captured_in_a_block_is_escaped_once(build_engine):
    text = "{% set line %}<i>{{ client.name }}</i>{% endset %}{{ line }} {{ line|safe }}"
    out = _planned_text(build_engine, "HTML", text, "<b>&</b>")
    # used as a value, the whole block is text; marked safe, it is markup with the value in it
    assert read_html(out) == [
        ("text", "<i><b>&</b></i> "),
        ("start", "i", ()),
        ("text", "<b>&</b>"),
        ("end", "i"),
    ]


def test_markup_built_from_a_safe_value_and_a_client_value_is_text(build_engine):
    # markupsafe would HTML-escape the client value into the "safe" result: right for HTML,
    # markup injection for MarkdownV2; any operation on a safe value gives text instead
    text = "{{ '*'|safe + client.name }} {{ client.name + '*'|safe }}"
    out = _planned_text(build_engine, "MarkdownV2", text, "_x_ <b>")
    assert _normal_events(read_markdown_v2(out)) == [("text", "*_x_ <b> _x_ <b>*")]


def _normal_events(events: list) -> list:
    merged: list = []
    for event in events:
        if event[0] == "text" and merged and merged[-1][0] == "text":
            merged[-1] = ("text", merged[-1][1] + event[1])
        else:
            merged.append(event)
    return merged


def test_values_nested_in_captured_blocks_cannot_multiply_past_the_output_limit(build_engine):
    # each block holds two copies of the one before: 2**40 copies of the name if expanded;
    # the placeholders stay small, their expansion is what the output limit counts
    text = "{% set x0 %}{{ client.name }}{{ client.name }}{% endset %}"
    for level in range(1, 40):
        text += f"{{% set x{level} %}}{{{{ x{level - 1} }}}}{{{{ x{level - 1} }}}}{{% endset %}}"
    text += "{{ x39 }}"
    engine = build_engine(_rules("slack", {"channel": "C0SUPPORT", "text": text}))
    plan = engine.evaluate(_event("abcdefgh"), explain=True)
    assert list(plan) == []
    assert plan.errors == [
        "rule 't': slack: template over its budget: output larger than 100000 characters"
    ]


# bidi controls ------------------------------------------------------------------------------------

SPOOF = "evil\u202etxt.exe \u202bembedded \u2067isolated \u200emarks\u200f\u061c" + BIDI
"""A client's name: an override makes ``evil\u202etxt.exe`` show as ``evilexe.txt``, and an
unclosed one reorders the admin's text after it (who wrote what)."""
BIDI_TARGETS = {
    "slack": ("slack", {"channel": "C0SUPPORT", "text": "*New chat* from {{ client.name }}: hi"}),
    "telegram HTML": (
        "telegram",
        {"chat_id": "-100", "parse_mode": "HTML", "text": "<b>{{ client.name }}</b> wrote"},
    ),
    "telegram MarkdownV2": (
        "telegram",
        {"chat_id": "-100", "parse_mode": "MarkdownV2", "text": "*{{ client.name|e }}* wrote"},
    ),
    "telegram plain": ("telegram", {"chat_id": "-100", "text": "{{ client.name|upper }} wrote"}),
}


@pytest.mark.parametrize("target", BIDI_TARGETS)
def test_a_message_people_read_gets_client_values_without_bidi_controls(
    build_engine, fake_slack, fake_telegram, target
):
    action, params = BIDI_TARGETS[target]
    engine = build_engine(_rules(action, params), _config(fake_slack, fake_telegram))
    send(engine, SPOOF)
    [message] = fake_slack.messages() if action == "slack" else fake_telegram.messages()
    text = message.text
    assert not set(text) & set(BIDI), ascii(text)
    assert "eviltxt" in text.replace("EVILTXT", "eviltxt")  # as written, in its order
    assert text.endswith("hi" if action == "slack" else "wrote")


def test_the_admin_s_own_bidi_marks_and_safe_values_are_kept(
    build_engine, fake_slack, fake_telegram
):
    params = {
        "chat_id": "-100",
        "text": "\u200f{{ client.name }} \u2067{{ client.name|safe }}\u2069",
    }
    engine = build_engine(_rules("telegram", params), _config(fake_slack, fake_telegram))
    send(engine, "a\u202eb")
    [message] = fake_telegram.messages()
    assert message.text == "\u200fab \u2067a\u202eb\u2069"


def test_a_webhook_gets_client_values_as_they_are(build_engine, fake_slack, fake_telegram):
    """A webhook's body is data for another system, not a message people read."""
    engine = build_engine(
        _rules("webhook", {"to": "https://hooks.example/x", "body": {"name": "{{ client.name }}"}}),
        _config(fake_slack, fake_telegram),
    )
    plan = engine.evaluate(_event(SPOOF), explain=True)
    assert plan.errors == []
    [planned] = plan
    assert planned.model.body == {"name": SPOOF}


def test_a_value_sent_without_its_bidi_controls_is_still_found_and_hidden(
    build_engine, fake_slack, fake_telegram
):
    """``rulekit forget`` and the audit output look for a client's name in what was sent: also
    for the form without bidi controls a message people read holds."""
    from rulekit.store.forms import PersonalValues

    action, params = BIDI_TARGETS["slack"]
    engine = build_engine(_rules(action, params), _config(fake_slack, fake_telegram))
    send(engine, SPOOF)
    [message] = fake_slack.messages()
    personal = PersonalValues([SPOOF])
    assert personal.found_in(message.text)
    assert shown(SPOOF) not in personal.replace_in(message.text, "***")
