"""A client's values a rule wrote elsewhere: into the conversation (``set`` a field to their
email, ``tag`` the chat with their plan: an ``updated`` event's conversation and ``changed``
hold them) and into an email sent to them (an address whose domain is outside ASCII is sent,
and its outcome recorded, with the domain's A-labels, ``xn--``). ``rulekit why`` hides them
without ``--show-content``, and ``rulekit forget`` erases them."""

from __future__ import annotations

from datetime import timedelta

from audit_site import T0

from rulekit.addresses import ascii_domain
from rulekit.event import Event
from rulekit.store import JobSpec
from rulekit.store.sqlite import SQLiteStore

EMAIL = "quinn.mrkmail@Exämple-Shop.io"
SENT_TO = ascii_domain(EMAIL)  # quinn.mrkmail@xn--exmple-shop-m8a.io
PLAN = "Platinum mrkplan"
EVENT = "chatra:message:q-1/updated/0123456789ab"


def add_update(site) -> None:
    event = Event(
        id=EVENT,
        channel="online-chat",
        event="updated",
        origin="rulekit",
        occurred_at=T0,
        conversation={
            "id": "conv-q",
            "status": "open",
            "tags": [PLAN],
            "fields": {"mail": EMAIL},
        },
        client={"id": "c-q", "display_name": "Q. Doe", "email": EMAIL, "custom": {"plan": PLAN}},
        changed={"tags": {"from": [], "to": [PLAN], "added": [PLAN], "removed": []}},
    )
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            state.record_event(
                event,
                inbox_id=None,
                trace={"rules": [], "plan": []},
                jobs=[JobSpec("Mail", "email", {"to": ["client"], "text": "hi"}, "email")],
                now=T0 + timedelta(seconds=1),
            )
            (job,) = state.jobs(event_id=event.id)
            result = {"sent": True, "to": [SENT_TO], "reply": "2.0.0 accepted"}
            state.record_attempt(job.id, "done", result=result, now=T0 + timedelta(seconds=2))
    finally:
        store.close()


def test_why_hides_the_client_s_values_in_the_conversation_changes_and_sent_addresses(site):
    add_update(site)
    shown = site.run("why", EVENT, "--show-content", "--format", "json").output
    assert EMAIL in shown and PLAN in shown and SENT_TO in shown  # the test can fail
    for out in (
        site.run("why", EVENT).output,
        site.run("why", EVENT, "--format", "json").output,
        site.run("history", "--format", "json").output,
    ):
        folded = out.casefold()
        assert "mrkmail" not in folded and "mrkplan" not in folded, out


def test_forget_erases_the_client_s_values_in_the_conversation_changes_and_sent_addresses(site):
    add_update(site)
    assert site.run("forget", "c-q", "--yes").exit_code == 0
    found = site.sql(
        "SELECT data || trace FROM events"
        " UNION ALL SELECT params || coalesce(result, '') FROM outbox"
        " UNION ALL SELECT coalesce(result, '') FROM attempts"
    )
    assert found and not [row for row in found if "mrk" in row[0].casefold()]


def test_why_of_a_timer_s_firing_hides_what_the_conversation_quotes_of_the_client_before(site):
    """The firing holds the client as they are when it fires (their email changed since), and
    the conversation a field a rule set to the email they had when the timer was set."""
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            conversation = {"id": "conv-t", "status": "open", "fields": {"mail": EMAIL}}
            old = {"id": "c-t", "display_name": "T. Doe", "email": EMAIL}
            state.record_event(
                Event(
                    id="chatra:message:t-1",
                    channel="online-chat",
                    event="message",
                    occurred_at=T0,
                    conversation=conversation,
                    client=old,
                ),
                inbox_id=None,
                trace={"rules": [], "plan": []},
                now=T0,
            )
            state.set_timer("Ping", "conv-t", "online-chat", T0, "chatra:message:t-1", now=T0)
            (timer,) = state.claim_timers("d1", lease=60, now=T0)
            fired = Event(
                id=f"timer:{timer.id}",
                channel="online-chat",
                event="message",
                occurred_at=T0,
                conversation=conversation,
                client={**old, "email": "new.address@example.net"},
            )
            state.finish_timer(timer.id, "d1", "fired", at=T0, event_id=fired.id)
            state.record_event(fired, inbox_id=None, trace={}, now=T0)
    finally:
        store.close()
    for out in (
        site.run("why", fired.id).output,
        site.run("why", fired.id, "--format", "json").output,
    ):
        assert "mrkmail" not in out.casefold(), out
