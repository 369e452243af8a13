"""Erasing a client (``rulekit forget``, on the store of a running console) leaves nothing of
them for the console to show afterwards: not in its API (read from the store), not in what its
live stream replays to a page that reconnects (the recent messages it keeps in memory were
published before the erasure), and not in what an agent's write racing with the erasure
records."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_helpers import ConsoleServer
from scaffold import make_event
from test_console_http import END, open_stream, read_stream
from workspace_helpers import VISITOR, path, running

from rulekit.audit.privacy import forget
from rulekit.runtime.planning import Processed
from rulekit.store import JobSpec, open_store

NAME = "Maria Lopez"
EMAIL = "maria.lopez@example.net"
TEXT = "my order 4711 went to Calle Mayor 5"
CLIENT = "visitor-erased-1"
STARTED = "online-chat:msg:Acb7t59BkCvoXi6SS"
"""The event of the workspace's sample chat."""


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


@pytest.mark.parametrize("write", ["reply", "client", "tags"])
def test_a_write_racing_with_forget_records_nothing_it_erased(tmp_path: Path, write: str) -> None:
    """An agent's write that read the conversation before ``rulekit forget`` committed, and
    records after it, records the client as the erasure left them: the forget runs in a
    transaction of another connection to the daemon's SQLite file, held open while the write
    reads (a read never waits in WAL mode) and reaches its own transaction (which waits)."""
    with running("sqlite", tmp_path) as workspace:
        workspace.started()
        erased = ("Visitor 4p40", "203.0.113.54")  # the anonymous visitor's display name and IP
        assert all(value in repr(workspace.event(STARTED).data) for value in erased)
        requests = {
            "reply": ("POST", "messages", {"text": "Yes, it is in stock."}),
            "client": ("PATCH", "client", {"phone": "+49 30 5550199"}),
            "tags": ("POST", "tags", {"add": ["vip"]}),
        }
        method, endpoint, body = requests[write]
        other = open_store("sqlite:///rulekit.sqlite3", tmp_path)
        answers: list[httpx.Response] = []
        try:
            with workspace.client("anna") as anna:
                sent = threading.Thread(
                    target=lambda: answers.append(
                        anna.request(method, f"{path()}/{endpoint}", json=body, timeout=30)
                    )
                )
                with other.transaction() as state:
                    state.forget_client(VISITOR)
                    sent.start()
                    sent.join(1.0)  # the write has read what the forget has not committed yet
                    assert not answers, answers  # and waits for the forget's transaction
                sent.join(30)
        finally:
            other.close()
        assert answers and answers[0].status_code in (200, 202), answers
        event_id = answers[0].json()["event_id"]
        recorded = workspace.event(event_id)
        assert recorded is not None
        assert not any(value in repr(recorded.data) for value in erased), recorded.data
        with workspace.daemon.store.reading() as reading:
            stored = reading.get_client("online-chat", VISITOR)
        assert stored is None or not any(value in repr(stored) for value in erased), stored
