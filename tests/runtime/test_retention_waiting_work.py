"""Retention and the work that waits for a person: a set-aside webhook can be requeued for as
long as the audit trail is kept, like a dead letter retried."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from daemons import chat_started, wait_for, write_setup

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
