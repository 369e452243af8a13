"""``rulekit why`` hides a client's content also where a trace's reasons, condition errors or
skipped actions quote it escaped (errors of a real rule rarely quote values, so this trace is
written as a failing template would leave it)."""

from __future__ import annotations

import json
from datetime import timedelta

from audit_site import T0

from rulekit.escapes import escape_markdown_v2
from rulekit.event import Event
from rulekit.store import JobSpec
from rulekit.store.sqlite import SQLiteStore

EMAIL = "Zoë.Quinn+x@Example.org"
TEXT = "card *4111* charged <twice> & more"
MDV2_TEXT = escape_markdown_v2(TEXT)  # card \*4111\* charged <twice\> & more
HTML_EMAIL = "zoë.quinn+x@example.org".upper()


def add_event(site) -> None:
    event = Event(
        id="chatra:message:zoe-1",
        channel="online-chat",
        event="message",
        occurred_at=T0,
        conversation={"id": "conv-zoe", "status": "open", "page": "https://x.io/?e=Zo%C3%AB"},
        client={"id": "c-zoe", "display_name": "Zoe Q.", "email": EMAIL, "city": "Cork City"},
        message={"id": "z1", "text": TEXT, "author": "client"},
    )
    trace = {
        "rules": [
            {
                "name": "Broken",
                "matched": False,
                "trace": {
                    "reason": f"condition failed: no key {json.dumps(TEXT)}",
                    "conditions": [
                        {
                            "source": "lookup[message.text]",
                            "result": None,
                            "error": f"no element '{MDV2_TEXT}'",
                            "evaluated": True,
                        }
                    ],
                },
            }
        ],
        "plan": [
            {
                "rule": "Tell",
                "action": "telegram",
                "params": {"text": HTML_EMAIL},
                "skipped": f"template error: {HTML_EMAIL} is not a chat",
            }
        ],
        "errors": [f"rule 'Tell': slack: bad channel {EMAIL.lower()}"],
    }
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            state.record_event(
                event,
                inbox_id=None,
                trace=trace,
                jobs=[JobSpec("Tell", "slack", {"text": "from https%3A%2F%2Fx.io"}, "slack:#o")],
                now=T0 + timedelta(seconds=1),
            )
            (job,) = state.jobs(event_id=event.id)
            error = f"Slack said: {json.dumps({'text': TEXT})}, city Cork City"
            state.record_attempt(job.id, "dead", error=error, now=T0 + timedelta(seconds=2))
    finally:
        store.close()


def test_why_hides_content_quoted_in_reasons_errors_and_skipped_actions(site):
    add_event(site)
    outputs = [
        site.run("why", "chatra:message:zoe-1").output,
        site.run("why", "chatra:message:zoe-1", "--format", "json").output,
    ]
    shown = site.run("why", "chatra:message:zoe-1", "--show-content").output
    assert MDV2_TEXT in shown and HTML_EMAIL in shown  # the test can fail
    for out in outputs:
        folded = out.casefold()
        for form in (TEXT, MDV2_TEXT, json.dumps(TEXT)[1:-1], EMAIL, "4111", "twice", "Cork"):
            assert form.casefold() not in folded, (form, out)
        assert "Zoe Q." in out and "[hidden]" in out
    assert "skipped: template error: [hidden] is not a chat" in outputs[0]


# -- timers --------------------------------------------------------------------------------

NEW_EMAIL = "Zoë.Later@Example.net"  # the client's email when the timer fired, not when it was set
LATE_TEXT = "my iban is DE89 3704 <0044>"


def add_timer(site) -> str:
    """Zoe's message sets a timer; when it fires (her email changed meanwhile), its ``unless:``
    fails with an error quoting her content escaped, as a failing template would. Returns the
    id of the event the firing is recorded as."""
    add_event(site)
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            state.set_timer(
                "Ping",
                "conv-zoe",
                "online-chat",
                T0 + timedelta(minutes=5),
                "chatra:message:zoe-1",
                now=T0,
            )
            (timer,) = state.claim_timers("d1", lease=60, now=T0 + timedelta(minutes=5))
            fired = Event(
                id=f"timer:{timer.id}",
                channel="online-chat",
                event="message",
                occurred_at=T0,
                conversation={"id": "conv-zoe", "status": "open"},
                client={"id": "c-zoe", "display_name": "Zoe Q.", "email": NEW_EMAIL},
                message={"id": "z1", "text": LATE_TEXT, "author": "client"},
            )
            reason = (
                f"unless failed: no element '{escape_markdown_v2(LATE_TEXT)}'"
                f" for {NEW_EMAIL.upper()} ({json.dumps(TEXT)})"
            )
            when = T0 + timedelta(minutes=5, seconds=2)
            assert state.finish_timer(
                timer.id, "d1", "error", reason=reason, at=when, event_id=fired.id
            )
            firing = {
                "rule": "Ping",
                "due": (T0 + timedelta(minutes=5)).isoformat(),
                "fired_at": when.isoformat(),
                "late_seconds": 2.0,
                "outcome": "error",
                "reason": reason,
            }
            state.record_event(fired, inbox_id=None, trace={"timer": firing}, jobs=[], now=when)
    finally:
        store.close()
    return fired.id


def test_why_and_history_hide_content_quoted_in_timer_reasons(site):
    fired = add_timer(site)
    outputs = {
        "why set": site.run("why", "chatra:message:zoe-1").output,
        "why set json": site.run("why", "chatra:message:zoe-1", "--format", "json").output,
        "why fired": site.run("why", fired).output,
        "why fired json": site.run("why", fired, "--format", "json").output,
        "history": site.run("history").output,
        "history json": site.run("history", "--format", "json").output,
    }
    forms = (
        LATE_TEXT,
        escape_markdown_v2(LATE_TEXT),
        json.dumps(LATE_TEXT)[1:-1],
        NEW_EMAIL,
        TEXT,
        json.dumps(TEXT)[1:-1],
        "iban",
        "4111",
    )
    for name, out in outputs.items():
        assert "Ping" in out, (name, out)
        folded = out.casefold()
        for form in forms:
            assert form.casefold() not in folded, (name, form, out)
    assert (
        "timer:1: unless failed: no element '[hidden]' for [hidden] (\"[hidden]\")"
        in (outputs["why set"])
    )
    assert "unless failed" in outputs["why fired"] and "[hidden]" in outputs["why fired"]
    shown = site.run("why", "chatra:message:zoe-1", "--show-content").output
    assert escape_markdown_v2(LATE_TEXT) in shown and NEW_EMAIL.upper() in shown  # can fail
    shown = site.run("why", fired, "--show-content").output
    assert escape_markdown_v2(LATE_TEXT) in shown
