"""A config using all five actions validates, plans, and runs them against the fakes."""

from __future__ import annotations

import asyncio
import textwrap

import pytest
from rulekit_chatra.testing import FakeChatra

from rulekit.actions.base import ActionContext
from rulekit.actions.pacing import Pacer
from rulekit.engine.engine import Engine
from rulekit.event import Event
from rulekit.runtime.dispatcher import as_stored
from rulekit.runtime.pipeline import Pipeline
from rulekit.store.memory import MemoryStore

RULES = """
- name: Everything at once
  on: {channel: online-chat, event: created}
  do:
    - assign: {group: support, strategy: round_robin}
    - autoreply: {text: "Hi {{ client.name or 'there' }}!"}
    - play_sound: {sound: chime, to: assignee}
    - slack: {channel: C0SUPPORT, text: "*New chat* from {{ client.name }}: {{ message.text }}"}
    - telegram:
        chat_id: "-1001"
        parse_mode: HTML
        text: "<b>New chat</b> from {{ client.name }}: {{ message.text }}"
"""


def write_config(tmp_path, chatra, slack, telegram) -> None:
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "all.yaml").write_text(RULES)
    (tmp_path / "rulekit.yaml").write_text(
        textwrap.dedent(
            f"""
            rules: rules.d
            storage: "memory://"
            channels:
              online-chat:
                provider: chatra
                public_key: {chatra.public_key}
                secret_key: {chatra.secret_key}
                base_url: {chatra.base_url}
                default_group: support
            groups: [support, sales]
            agents:
              - {{email: Ann@Example.com, name: Ann, groups: [support], channels: [online-chat]}}
              - {{email: bob@example.com, groups: [support], channels: []}}
            integrations:
              slack: {{token: "${{SLACK_TOKEN}}", base_url: "{slack.base_url}"}}
              telegram: {{token: "${{TELEGRAM_TOKEN}}", base_url: "{telegram.base_url}"}}
              sounds: {{files: {{}}}}
            """
        )
    )


@pytest.fixture
def chatra():
    with FakeChatra() as service:
        yield service


def test_all_five_actions_run_against_the_fakes(
    tmp_path, monkeypatch, chatra, fake_slack, fake_telegram
):
    monkeypatch.setenv("SLACK_TOKEN", fake_slack.token)
    monkeypatch.setenv("TELEGRAM_TOKEN", fake_telegram.token)
    write_config(tmp_path, chatra, fake_slack, fake_telegram)
    engine = Engine.from_path(tmp_path / "rules.d", tmp_path / "rulekit.yaml")
    store = MemoryStore()  # what the actions run on; the dry run simulates on its own
    pipeline = Pipeline(engine, MemoryStore())
    event = Event(
        channel="online-chat",
        event="created",
        conversation={"id": "conv-9", "status": "open"},
        client={"id": "chatra-client-9", "name": "<!channel> & Co"},
        message={"id": "m9", "text": "<i>help</i>", "author": "client"},
    )
    # (then the `assigned` and `updated` events the simulated assign emitted)
    (_, plan), *emitted_plans = pipeline.events([event]).events
    assert [e.event for e, _ in emitted_plans] == ["assigned", "updated"]
    assert [p.action for p in plan.runnable] == [
        "assign",
        "autoreply",
        "play_sound",
        "slack",
        "telegram",
    ]
    for planned in plan.runnable:
        assert pipeline.describe(event, planned)[1] is None  # nothing would fail

    published: list[dict] = []
    emitted: list[Event] = []

    async def dispatch() -> list[dict]:
        pacer = Pacer()
        results = []
        try:
            for planned in plan.runnable:
                action = engine.actions[planned.action]
                seen = event
                if action.sees_conversation:  # as the dispatcher hands it: as stored now
                    with store.transaction() as state:
                        seen = as_stored(state, event)
                context = ActionContext(
                    event=seen,
                    config=engine.config,
                    provider=pipeline.providers["online-chat"],
                    store=store,
                    publish=published.append,
                    emitted=emitted,
                )
                async with pacer.acquire(action.pacing(planned.model)):
                    results.append(await action.execute(planned.model, context))
        finally:
            for action in engine.actions.values():
                await action.aclose()
            await pipeline.providers["online-chat"].aclose()
        return results

    assign, autoreply, sound, slack, telegram = asyncio.run(dispatch())

    assert assign["assigned"] == "Ann@Example.com"  # bob has no access to the channel
    assert [e.event for e in emitted] == ["assigned", "updated"]
    assert autoreply  # the provider's answer, for the audit
    [reply] = chatra.sent
    assert reply["clientId"] == "chatra-client-9" and reply["text"] == "Hi <!channel> & Co!"
    assert reply.get("agentEmail") == "Ann@Example.com"  # sent as the agent just assigned
    assert published == [
        {
            "type": "sound",
            "sound": "chime",
            "to": ["Ann@Example.com"],
            "event_id": event.id,
            "channel": event.channel,
        }
    ]
    assert sound["published"] is True
    # values interpolated into markup arrive escaped exactly once
    [posted] = fake_slack.messages()
    assert posted.text == "*New chat* from &lt;!channel&gt; &amp; Co: &lt;i&gt;help&lt;/i&gt;"
    assert slack["ts"]
    [sent] = fake_telegram.messages()
    assert sent.text == "<b>New chat</b> from &lt;!channel&gt; &amp; Co: &lt;i&gt;help&lt;/i&gt;"
    assert sent.parse_mode == "HTML" and telegram["message_id"] == 1


def test_missing_integrations_are_reported_not_crashed(tmp_path, chatra):
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "all.yaml").write_text(RULES)
    (tmp_path / "rulekit.yaml").write_text(
        "channels: {online-chat: {provider: chatra}}\n"
        "groups: [support]\n"
        "integrations: {telegram: {token: ''}}\n"
    )
    engine = Engine.from_path(tmp_path / "rules.d", tmp_path / "rulekit.yaml")
    assert engine.actions["slack"].unavailable() == "Slack is not configured"
    assert engine.actions["telegram"].unavailable() == "the Telegram token is empty"
    assert engine.actions["play_sound"].unavailable() is None
    assert engine.actions["assign"].unavailable() is None
