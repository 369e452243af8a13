"""Processing: poison items set aside, events emitted by actions, health, metrics and logs."""

from __future__ import annotations

import asyncio
import json

import httpx
from daemons import chat_started, wait_for, write_setup

ASSIGN_THEN_REPLY = """\
- name: Assign and greet
  on: {channel: online-chat, event: created}
  do:
    - assign: {group: support}
    - autoreply: {text: "Hi, {{ client.display_name }}"}
- name: Note assignments
  on: {channel: online-chat, event: assigned}
  allow_own_events: true
  do:
    - play_sound: {sound: bell, to: everyone}
"""


def test_a_poison_item_is_set_aside_and_blocks_nothing(tmp_path, serve, chatra):
    server = serve(write_setup(tmp_path, chatra=chatra))
    poison = httpx.post(server.webhook_url, content=b'{"eventName": "chatExploded"}')
    assert poison.status_code == 200  # JSON: accepted, the provider decides
    httpx.post(server.webhook_url, content=chat_started(1))
    wait_for(lambda: len(chatra.sent) == 1)
    store = server.daemon.store

    def failed() -> list:
        with store.transaction() as state:
            return state.inbox_items(status="failed")

    (item,) = wait_for(failed)
    assert item.id == poison.json()["id"]
    assert "unknown eventName" in (item.error or "")
    subscription = server.call(_subscribe(server))
    with store.transaction() as state:  # retryable: it is processed again, and fails again
        state.requeue_inbox(item.id)
    server.call(_wake(server))
    message = server.call(_next(subscription, "inbox_failed"))
    assert message["inbox_id"] == item.id
    assert httpx.get(f"{server.url}/metrics").text.count("rulekit_events_failed_total{") == 1


def test_events_emitted_by_actions_are_processed_like_inbox_events(tmp_path, serve, chatra):
    server = serve(write_setup(tmp_path, ASSIGN_THEN_REPLY, chatra=chatra))
    httpx.post(server.webhook_url, content=chat_started(1))
    wait_for(lambda: chatra.sent)
    # the reply went out as the agent the assign before it picked (plan order, one event)
    assert chatra.sent[0].get("agentEmail") == "anna@example.com"
    store = server.daemon.store

    def assigned():
        with store.transaction() as state:
            return state.history(event="assigned")

    (record,) = wait_for(assigned)
    assert record.data["origin"] == "rulekit"
    with store.transaction() as state:
        wait_for(lambda: state.jobs(event_id=record.event_id))


def test_healthz_and_metrics(tmp_path, serve, chatra):
    server = serve(write_setup(tmp_path, chatra=chatra))
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["rules_version"] == server.daemon.snapshot.version
    httpx.post(server.webhook_url, content=chat_started(1))
    wait_for(lambda: chatra.sent)
    wait_for(
        lambda: (
            'rulekit_actions_total{action="autoreply",outcome="done",rule="Greet"} 1.0'
            in httpx.get(f"{server.url}/metrics").text
        )
    )
    metrics = httpx.get(f"{server.url}/metrics").text
    for name in (
        'rulekit_events_received_total{channel="online-chat"} 1.0',
        'rulekit_events_processed_total{channel="online-chat",event="created"} 1.0',
        'rulekit_rule_matched_total{rule="Greet"} 1.0',
        "rulekit_webhook_to_action_seconds_count",
        "rulekit_rules_version_info{version=",
        "rulekit_outbox_pending",
        "rulekit_reload_errors_total 0.0",
    ):
        assert name in metrics
    server.stop()
    assert server.daemon.health()[0] == 503  # stopped: not ready


def test_json_logs_without_message_texts_or_emails(tmp_path, processes, chatra):
    config = write_setup(
        tmp_path, ASSIGN_THEN_REPLY, chatra=chatra, extra="logging: {format: json}\n"
    )
    process = processes(config).wait_ready()
    httpx.post(process.webhook_url, content=chat_started(1, "my secret question"))
    wait_for(lambda: chatra.sent)
    assert process.terminate() == 0
    lines = [json.loads(line) for line in process.output().splitlines() if line.strip()]
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    assert any(line["logger"] == "rulekit.access" for line in lines)
    text = process.output()
    assert "my secret question" not in text
    assert "anna@example.com" not in text


async def _subscribe(server):
    return server.daemon.feed.subscribe()


async def _wake(server) -> None:
    server.daemon.processor.wake()


async def _next(subscription, kind: str) -> dict:
    async with asyncio.timeout(10):
        while True:
            message = await subscription.get()
            if message["type"] == kind:
                return message
