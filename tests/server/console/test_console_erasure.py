"""Erasing a client (``rulekit forget``, on the store of a running console) leaves nothing of
them for the console to show afterwards: not in its API (read from the store), and not in what
its live stream replays to a page that reconnects (the recent messages it keeps in memory were
published before the erasure)."""

from __future__ import annotations

from typing import Any

from console_helpers import ConsoleServer
from scaffold import make_event
from test_console_http import END, open_stream, read_stream

from rulekit.audit.privacy import forget
from rulekit.runtime.planning import Processed
from rulekit.store import JobSpec

NAME = "Maria Lopez"
EMAIL = "maria.lopez@example.net"
TEXT = "my order 4711 went to Calle Mayor 5"
CLIENT = "visitor-erased-1"


def seed(server: ConsoleServer) -> list[dict[str, Any]]:
    """An event of the client's recorded with a job that failed quoting them; what the live
    feed carried of them (as the daemon publishes it)."""
    event = make_event(
        id="online-chat:msg:erase-1",
        conversation={"id": f"online-chat:{CLIENT}"},
        client={"id": CLIENT, "name": NAME, "email": EMAIL},
        message={"id": "erase-1", "text": TEXT, "author": "client"},
    )
    team = {"tracked": True, "open": {EMAIL: 0}}
    with server.store.transaction() as state:
        state.record_event(
            event,
            inbox_id=None,
            trace={"team": team},
            jobs=[JobSpec("Greet", "autoreply", {"text": f"Hi {NAME}"}, "autoreply")],
        )
        (job,) = state.claim_jobs("test", lease=60)
        error = f"chatra refused the reply to {NAME}"
        state.record_attempt(job.id, "dead", error=error)
    action = {
        "type": "dead_letter",
        "job_id": job.id,
        "event_id": event.id,
        "rule": "Greet",
        "action": "autoreply",
        "destination": "autoreply",
        "attempt": 1,
        "outcome": "dead",
        "error": error,
    }
    return [Processed(event, recorded=True, matched=["Greet"], team=team).message(), action]


def test_a_reconnecting_page_is_replayed_nothing_of_a_client_erased_since(
    console_server: ConsoleServer,
) -> None:
    published = seed(console_server)
    with console_server.client("ann") as ann:
        context, lines = open_stream(ann, console_server)
        try:
            for message in published:
                console_server.publish(message)
            console_server.publish({**END, "version": "first"})
            before = read_stream(lines, until="first")
        finally:
            context.__exit__(None, None, None)
        # the page saw the client while they were known
        assert NAME in repr(before) and TEXT in repr(before) and EMAIL in repr(before)

        forget(console_server.store, CLIENT)

        # the page comes back, having missed everything (its first Last-Event-ID)
        context, lines = open_stream(ann, console_server, **{"Last-Event-ID": "0"})
        try:
            console_server.publish(END)
            again = read_stream(lines)
        finally:
            context.__exit__(None, None, None)
        recent = ann.get("/console/api/recent").json()
    # what happened is still told, without the client
    assert [m["type"] for m in again] == ["event", "dead_letter", "reload", "reload"]
    for seen in (again, recent):
        text = repr(seen)
        assert NAME not in text and TEXT not in text and EMAIL not in text, seen
