"""A conversation's view reads the jobs of all its events at once: the statements it runs do
not grow with the number of events (on PostgreSQL each was a round trip, up to 500 per view)."""

from __future__ import annotations

from pathlib import Path

from rulekit.directory import Directory
from rulekit.event import Event
from rulekit.server.console import conversations
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.team import TeamView
from rulekit.store.records import JobSpec
from rulekit.store.sqlite import SQLiteStore

ADMIN = TeamView(Viewer(None, "admin", True), Directory([], []))


def statements_of_a_view(tmp_path: Path, events: int) -> tuple[int, dict]:
    store = SQLiteStore(tmp_path / f"view-{events}.sqlite3")
    try:
        with store.transaction() as state:
            for n in range(events):
                event = Event(
                    id=f"chat:{n}",
                    channel="chat",
                    event="message",
                    conversation={"id": "chat:c1"},
                    message={"id": f"m{n}", "text": f"message {n}"},
                )
                job = JobSpec("Notify", "slack", {"n": n}, "slack:C1")
                state.record_event(event, inbox_id=None, trace={}, jobs=[job])
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
        with store.reading() as state:
            view = conversations.view(state, "chat:c1", ["chat"], ADMIN)
        store._conn.set_trace_callback(None)  # type: ignore[union-attr]
    finally:
        store.close()
    assert view is not None
    return len(statements), view


def test_the_view_runs_as_many_statements_for_3_events_as_for_60(tmp_path: Path) -> None:
    few, small = statements_of_a_view(tmp_path, 3)
    many, large = statements_of_a_view(tmp_path, 60)
    assert few == many
    assert len(large["events"]) == len(large["actions"]) == len(large["thread"]) == 60
    assert [a["action"] for a in small["actions"]] == ["slack"] * 3
    assert [e["event"]["id"] for e in large["events"]][:2] == ["chat:59", "chat:58"]
    assert all(len(e["jobs"]) == 1 for e in large["events"])
