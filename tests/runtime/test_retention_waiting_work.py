"""Retention and what it must not take: a set-aside webhook can be requeued for as long as the
audit trail is kept, like a dead letter retried; and a webhook redelivered after its first
delivery was purged is still known (the seen message ids are not subject to retention)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
from daemons import chat_fragment, chat_started, wait_for, write_setup

from rulekit.audit import repair
from rulekit.audit.retention import purge
from rulekit.config import RetentionSettings


def test_a_set_aside_webhook_keeps_its_body_until_retention_deletes_it(tmp_path, serve, chatra):
    # retention emptied a set-aside webhook's body with the processed ones' (payloads, 30 d):
    # requeued once its cause was fixed, later than that, it was set aside again and its
    # event, acknowledged to the sender, was never processed
    server = serve(write_setup(tmp_path, chatra=chatra))
    store = server.daemon.store
    with store.transaction() as state:  # what setting it aside leaves
        inbox_id, _ = state.append_inbox("online-chat", chat_started(1), delivery_key="k1")
        state.finish_inbox(inbox_id, error="channel 'online-chat' is not configured any more")
    settings = RetentionSettings()  # payloads 30 d, events 90 d
    later = datetime.now(UTC) + settings.payloads + timedelta(days=1)
    assert purge(store, settings, later)["inbox"] == 0
    with store.transaction() as state:
        repair.requeue(state, inbox_id, None)
    server.call(_wake(server))

    def finished():
        with store.transaction() as state:
            item = state.get_inbox(inbox_id)
        return item if item is not None and item.status != "pending" else None

    item = wait_for(finished)
    assert (item.status, item.error) == ("done", None)
    wait_for(lambda: chatra.sent)
    assert [m["text"] for m in chatra.sent] == ["Hello Visitor 1"]
    # and the whole item goes with the audit trail
    assert (
        purge(store, settings, datetime.now(UTC) + settings.events + timedelta(days=1))["inbox"]
        == 1
    )


async def _wake(server) -> None:
    server.daemon.processor.wake()


EVERY_EVENT = """\
- name: Answer everything
  on: {channel: online-chat, event: [created, message, reopened, closed]}
  do:
    - autoreply: {text: "{{ event }}: {{ message.text or '' }}"}
"""


def transcript(n: int) -> bytes:
    """Visitor ``n``'s chat closed: every message of it again, in Chatra's transcript."""
    started, fragment = json.loads(chat_started(n)), json.loads(chat_fragment(n, 1))
    messages = [{**started["message"], "type": "client"}, *fragment["messages"]]
    body = {"eventName": "chatTranscript", "messages": messages, "agents": []}
    return json.dumps({**body, "client": started["client"]}).encode()


def test_a_webhook_redelivered_after_retention_purged_it_is_not_processed_again(
    tmp_path, serve, chatra
):
    server = serve(write_setup(tmp_path, EVERY_EVENT, chatra=chatra))
    bodies = [chat_started(1), chat_fragment(1, 1), transcript(1)]
    for n, body in enumerate(bodies, start=1):
        assert httpx.post(server.webhook_url, content=body).status_code == 200
        wait_for(lambda n=n: len(chatra.sent) == n)
    settings = RetentionSettings()
    purged = purge(server.daemon.store, settings, datetime.now(UTC) + settings.events * 2)
    assert purged["events"] == 3 and purged["inbox"] == 3  # nothing left to recognise them by
    for body in bodies:  # the sender delivers them all again
        assert httpx.post(server.webhook_url, content=body).json()["status"] == "accepted"
    store = server.daemon.store

    def processed() -> bool:
        with store.transaction() as state:
            return not state.inbox_items(status="pending")

    wait_for(processed)
    with store.transaction() as state:
        assert [item.status for item in state.inbox_items()] == ["done"] * 3
        assert state.history() == []  # no event again
    assert [m["text"] for m in chatra.sent] == ["created: Hello?", "message: message 1", "closed: "]
