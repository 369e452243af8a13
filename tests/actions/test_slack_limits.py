"""A client's long message in a Slack alert: cut to Slack's limits, never the alert refused.

Slack refuses a whole message (``invalid_blocks``) whose Block Kit text is over its limit, and
cuts a ``text`` over 40,000 characters wherever that falls. Rendered by the real engine, posted
by slack-sdk's real client to the fake Slack (which refuses as Slack does)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from action_helpers import run

from rulekit.actions.base import ActionContext
from rulekit.actions.slack_text import MAX_TEXT, fit_blocks, fit_text
from rulekit.actions.telegram_text import ELLIPSIS, utf16_len
from rulekit.event import Event

V = "{{ message.text }}"
BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": f"New: {V}"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": f"*From the client:* {V}"}},
    {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": f"*Said* {V}"}, {"type": "plain_text", "text": V}],
        "accessory": {"type": "button", "text": {"type": "plain_text", "text": f"Reply {V}"}},
    },
    {"type": "context", "elements": [{"type": "mrkdwn", "text": f"<https://x.example|{V}>"}]},
    {"type": "image", "image_url": "https://x.example/i.png", "alt_text": V},
]
LIMITS = {  # a text object's path: its limit, whether it is mrkdwn
    (0, "text"): (150, False),
    (1, "text"): (3000, True),
    (2, "fields", 0): (2000, True),
    (2, "fields", 1): (2000, False),
    (2, "accessory", "text"): (75, False),
}


def _engine(build_engine: Any, fake_slack: Any, params: dict[str, Any]) -> Any:
    rules = f"- name: t\n  on: {{channel: online-chat}}\n  do:\n    - slack: {json.dumps(params)}\n"
    config = (
        "channels: {online-chat: {provider: webhook}}\n"
        "integrations:\n"
        f"  slack: {{token: {fake_slack.token}, base_url: '{fake_slack.base_url}'}}\n"
    )
    return build_engine(rules, config)


def _post(engine: Any, text: str) -> tuple[dict[str, Any], str]:
    """Plan the engine's one action for a client's message ``text``, post it for real; its
    result and what the dry run says of it."""
    event = Event(
        channel="online-chat",
        event="created",
        conversation={"id": "conv-1", "status": "open"},
        client={"id": "client-1", "name": "Mia"},
        message={"id": "m1", "text": text, "author": "client"},
    )
    plan = engine.evaluate(event, explain=True)
    assert plan.errors == []
    [planned] = plan
    action = engine.actions[planned.action]
    context = ActionContext(event=event, config=engine.config)
    said = action.describe(planned.model, context)
    return run(action, lambda: action.execute(planned.model, context)), said


def _text_at(blocks: Any, path: tuple[Any, ...]) -> str:
    node = blocks[path[0]]
    for key in path[1:]:
        node = node[key]
    return str(node["text"])


def _assert_whole(kept: str, unit: str, sent: str, markup: bool = True) -> None:
    """``kept`` ends with a whole character of the client's text (``unit``, sent as ``sent``),
    and with no piece of an entity (in mrkdwn)."""
    tail = kept[kept.rfind("&") :] if "&" in kept and markup else ""
    assert not tail or tail.startswith(("&amp;", "&lt;", "&gt;")), kept[-12:]
    if unit.strip() not in ("&", "<@U1>"):  # one character as people see it
        assert kept.rstrip().endswith(sent.strip()), kept[-12:]


@pytest.mark.parametrize(
    "unit",
    ["a", "é", "e\u0301", "👍🏽", "🇩🇪 ", "&", "<@U1>"],
    ids=["ascii", "accent", "combining", "emoji", "flag", "entity", "mention-looking"],
)
def test_a_long_client_message_in_blocks_is_cut_to_each_limit_not_refused(
    build_engine, fake_slack, unit
):
    engine = _engine(build_engine, fake_slack, {"channel": "C1", "text": V, "blocks": BLOCKS})
    escaped = {"&": "&amp;", "<@U1>": "&lt;@U1&gt;"}.get(unit, unit)
    text = unit * (45_000 // len(escaped))  # over 40,000 characters once escaped
    result, said = _post(engine, text)
    [message] = fake_slack.messages()
    assert message.status == 200 and message.error is None
    assert result["truncated"] is True and "truncated to Slack's limits" in said
    posted = message.request.json
    assert utf16_len(posted["text"]) <= MAX_TEXT and posted["text"].endswith(ELLIPSIS)
    for path, (limit, markup) in LIMITS.items():
        cut = _text_at(posted["blocks"], path)
        assert utf16_len(cut) <= limit and cut.endswith(ELLIPSIS), path
        # what is kept ends with a whole unit of the client's text, as escaped where it landed
        kept = cut.removesuffix(ELLIPSIS).rstrip()
        _assert_whole(kept, unit, escaped if markup else unit, markup)
    alt = posted["blocks"][4]["alt_text"]
    assert utf16_len(alt) <= 2000
    _assert_whole(alt.removesuffix(ELLIPSIS), unit, unit, markup=False)
    _assert_whole(posted["text"].removesuffix(ELLIPSIS), unit, escaped)
    # a link is never cut: one too long for its text object leaves the ellipsis alone
    assert _text_at(posted["blocks"], (3, "elements", 0)) == ELLIPSIS


def test_a_message_that_fits_is_sent_unchanged_and_not_said_cut(build_engine, fake_slack):
    engine = _engine(build_engine, fake_slack, {"channel": "C1", "text": V, "blocks": BLOCKS})
    result, said = _post(engine, "x" * 60)
    [message] = fake_slack.messages()
    assert message.status == 200 and "truncated" not in result and "truncated" not in said
    assert message.request.json["blocks"][1]["text"]["verbatim"] is True
    assert _text_at(message.request.json["blocks"], (0, "text")) == "New: " + "x" * 60


def test_a_cut_never_falls_inside_a_link_mention_or_entity_and_closes_code():
    link = "<https://x.example/a|label>"
    for piece in (link, "<@U123>", "<!here>", "&amp;", "&lt;", "&gt;"):
        for offset in range(len(piece) + 1):
            text = "a" * (100 - offset) + piece * 10
            cut = fit_text(text, 100)
            assert utf16_len(cut) <= 100 and cut.endswith(ELLIPSIS)
            body = cut.removesuffix(ELLIPSIS)
            assert body.count("<") == body.count(">") and not body.rstrip("a;").endswith("&")
            rest = body.lstrip("a")
            assert rest == piece * (len(rest) // len(piece)), (piece, offset, cut)
    cut = fit_text("```\n" + "code line\n" * 50, 100)
    assert cut.endswith(ELLIPSIS + "```") and utf16_len(cut) <= 100
    assert fit_text("<" * 200_000, 10) == "<" * 9 + ELLIPSIS  # no matching ">": linear


def test_options_and_markdown_blocks_get_their_own_limits():
    long = "o" * 20_000
    blocks = [
        {"type": "markdown", "text": long},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "static_select",
                    "options": [{"text": {"type": "plain_text", "text": long}, "value": "v"}],
                }
            ],
        },
    ]
    markdown, actions = fit_blocks(blocks)
    assert utf16_len(markdown["text"]) == 12_000
    assert utf16_len(actions["elements"][0]["options"][0]["text"]["text"]) == 75
    assert actions["elements"][0]["options"][0]["value"] == "v"
