"""Every claim reads its queue by an index, and the console finds a conversation by index,
however much history the store holds.

The inbox, outbox and timers keep their finished rows (until retention) and the outbox keeps
jobs waiting for a retry far ahead. A claim that reads those in id order, or sorts them, costs
in proportion to the history (80 ms per claim with 100,000 pending retries); by its index it
reads only what is due. Each test seeds a store with finished rows, future-dated pending ones
and an audit trail of many conversations, captures the statements the work runs and asks the
database for their plans (``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN`` on PostgreSQL, after
``ANALYZE``, so the planner weighs the real row counts)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from postgres_schemas import POSTGRES_ENV
from store_backends import BACKENDS, Backend

from rulekit.directory import Directory
from rulekit.event import Conversation, Event
from rulekit.server.console.conversations import view
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.team import TeamView
from rulekit.store import JournaledState, JournaledStore
from rulekit.store.records import JobSpec

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(days=1)
LONG_AGO = NOW - timedelta(days=30)
FINISHED = 20_000
"""Finished rows of each queue."""
WAITING = 5_000
"""Pending rows of each queue that are due only tomorrow."""


Plan = tuple[str, str]
"""A statement and the database's plan for it."""


class Recording:
    """A database connection that keeps the statements run through it (and runs them)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.statements: list[tuple[str, Any]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.statements.append((sql, params))
        return self.conn.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


@pytest.fixture(
    params=["sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else []),
)
def seeded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournaledStore]:
    """A SQL store with a history: finished inbox items, jobs and timers, and pending jobs
    and timers due tomorrow."""
    backend: Backend = BACKENDS[request.param](tmp_path)
    store = backend.open()
    try:
        _seed(store)
        yield store
    finally:
        for opened in backend.opened:
            opened.close()
        if backend.cleanup is not None:
            backend.cleanup()


def _seed(store: JournaledStore) -> None:
    with store.transaction() as state:
        inbox_id, _ = state.append_inbox("chat", b"{}", delivery_key="seed", now=LONG_AGO)
        state.finish_inbox(inbox_id)
        conversation = Conversation(id="chat:seed", status="open")
        state.save_conversation("chat", "seed", conversation)
        event = Event(
            id="chat:seed",
            channel="chat",
            event="message",
            occurred_at=LONG_AGO,
            conversation=conversation,
        )
        job = JobSpec("Notify", "slack", {"text": "hi"}, "slack:C1")
        state.record_event(event, inbox_id=inbox_id, trace={}, jobs=[job], now=LONG_AGO)
        state.set_timer("Remind", "chat:seed", "chat", LONG_AGO, "chat:seed", now=LONG_AGO)
    with store.transaction() as state:
        (job_id,) = [job.id for job in state.jobs(status="pending")]
        state.record_attempt(job_id, "done", now=LONG_AGO)
        (timer,) = state.claim_timers("seed", lease=60, now=LONG_AGO)
        state.finish_timer(timer.id, "seed", "fired", at=LONG_AGO)
    numbers = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {})"
    copies = [
        # the audit trail: events of many conversations (ten each), and those conversations
        (
            FINISHED,
            "INSERT INTO events (event_id, inbox_id, channel, event, conversation_id,"
            " occurred_at, data, trace, processed_at) SELECT event_id || '#' || i, NULL, channel,"
            f" event, conversation_id || '#' || (i % {FINISHED // 10}), occurred_at, data, trace,"
            " processed_at FROM events, n",
        ),
        (
            FINISHED // 10,
            "INSERT INTO conversations (channel, key, id, status, data, updated_at, active_at)"
            " SELECT channel, key || '#' || i, id || '#' || i, status, data, updated_at,"
            " active_at FROM conversations, n",
        ),
        # finished: inbox items, done jobs (each of a lane of its own), fired timers
        (
            FINISHED,
            "INSERT INTO inbox (channel, received_at, body, delivery_key, status, attempts)"
            " SELECT channel, received_at, body, delivery_key || '#' || i, status, attempts"
            " FROM inbox, n",
        ),
        (
            FINISHED,
            "INSERT INTO outbox (event_id, rule, action, params, destination, lane, status,"
            " next_attempt_at) SELECT event_id || '#' || i, rule, action, params, destination,"
            " lane || '#' || i, status, next_attempt_at FROM outbox, n",
        ),
        (
            FINISHED,
            "INSERT INTO timers (rule, conversation_id, channel, due, trigger_event_id, set_at,"
            " status) SELECT rule, conversation_id || '#' || i, channel, due, trigger_event_id,"
            " set_at, status FROM timers, n",
        ),
        # waiting: jobs to retry tomorrow, timers due tomorrow
        (
            WAITING,
            "INSERT INTO outbox (event_id, rule, action, params, destination, lane, status,"
            " next_attempt_at) SELECT event_id, rule, action, params, destination,"
            " 'retry#' || i, 'pending', :later FROM outbox, n WHERE outbox.id = 1",
        ),
        (
            WAITING,
            "INSERT INTO timers (rule, conversation_id, channel, due, trigger_event_id, set_at)"
            " SELECT rule, 'later#' || i, channel, :later, trigger_event_id, set_at"
            " FROM timers, n WHERE timers.id = 1",
        ),
    ]
    with store.transaction() as state:
        times = {"later": state.dialect.time(LATER)}  # type: ignore[attr-defined]
        for count, insert in copies:
            state.execute(f"{numbers.format(count)} {insert}", times)  # type: ignore[attr-defined]
    with store.transaction() as state:
        state.execute("ANALYZE")  # type: ignore[attr-defined]


def _plans(store: JournaledStore, work: Callable[[JournaledState], object]) -> list[Plan]:
    """Each query ``work`` ran in a transaction, with the database's plan for it as text."""
    with store.transaction() as state:
        conn = state.conn = Recording(state.conn)  # type: ignore[attr-defined]
        work(state)
        statements = [(sql, params) for sql, params in conn.statements if "SELECT" in sql]
        sqlite = type(store).__name__ == "SQLiteStore"
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        out = []
        for sql, params in statements:
            rows = conn.conn.execute(explain + sql, params).fetchall()
            steps = [str(row[3] if sqlite else row["QUERY PLAN"]) for row in rows]
            out.append((sql, "\n".join(steps)))
    return out


def _claim(name: str) -> Callable[[JournaledState], object]:
    return lambda state: getattr(state, name)("me", lease=60, limit=10, now=NOW)


PENDING_ONLY = {"inbox_pending", "inbox_pending_by_conversation", "outbox_due", "timers_due"}
"""Partial indexes: they hold the pending rows only, never the history."""
QUEUES = ("inbox", "outbox", "timers")
HISTORY = (*QUEUES, "events", "conversations")


def _full_scans(sql: str, plan: str) -> list[str]:
    """The plan's steps that read a table of the history whole: a scan of the table, or of
    an index of all its rows (its primary key read in order) without a condition that
    bounds it."""
    named = re.findall(rf"({'|'.join(HISTORY)}) (\w+)", sql)
    tables = {alias: table for table, alias in named} | {table: table for table in HISTORY}
    nodes: list[list[str]] = []
    for line in plan.splitlines():
        step = line.strip().removeprefix("->").strip()
        if not nodes or line.lstrip().startswith("->") or step.startswith(("SCAN", "SEARCH")):
            nodes.append([step])
        else:
            nodes[-1].append(step)
    out = []
    for step, *details in nodes:
        words = step.split()
        if words[0] == "SCAN":  # SQLite: SEARCH is bounded, SCAN reads it all
            index = words[words.index("INDEX") + 1] if "INDEX" in words else None
            table = words[1]
        elif "Seq Scan on " in step:
            index, table = None, step.split(" on ")[1].split()[0]
        elif " Scan using " in step:  # PostgreSQL: bounded when it has an index condition
            index, table = step.split(" using ")[1].split()[0], step.split(" on ")[1].split()[0]
            if any(detail.startswith("Index Cond") for detail in details):
                continue
        else:
            continue
        if tables.get(table) in HISTORY and index not in PENDING_ONLY:
            out.append(step)
    return out


@pytest.mark.parametrize("claim", ["claim_inbox", "claim_jobs", "claim_timers"])
def test_a_claim_reads_its_queue_by_an_index(seeded: JournaledStore, claim: str) -> None:
    plans = _plans(seeded, _claim(claim))
    assert plans, f"{claim} ran no query"
    for sql, plan in plans:
        assert not _full_scans(sql, plan), f"{sql}\n{plan}"


def test_the_job_claim_uses_the_due_index(seeded: JournaledStore) -> None:
    ((_, plan),) = [
        (sql, plan) for sql, plan in _plans(seeded, _claim("claim_jobs")) if "outbox" in sql
    ]
    assert "outbox_due" in plan, plan


def test_a_claim_with_nothing_due_claims_nothing(seeded: JournaledStore) -> None:
    with seeded.transaction() as state:
        assert state.claim_jobs("me", lease=60, now=NOW) == []
        assert state.claim_inbox("me", lease=60, now=NOW) == []
        assert state.claim_timers("me", lease=60, now=NOW) == []


_ADMIN = TeamView(Viewer(None, "admin", True), Directory([], []))


def test_the_console_finds_an_old_conversation_by_index(seeded: JournaledStore) -> None:
    found: list[object] = []
    plans = _plans(seeded, lambda state: found.append(view(state, "chat:seed#7", ["chat"], _ADMIN)))
    assert found != [None]
    assert plans
    for sql, plan in plans:
        assert not _full_scans(sql, plan), f"{sql}\n{plan}"


@pytest.mark.parametrize(
    "cursor", [{"before": "chat:seed#10007"}, {"after": "chat:seed#10007"}, {}]
)
def test_a_page_of_a_conversation_is_read_by_index(
    seeded: JournaledStore, cursor: dict[str, str]
) -> None:
    """The latest page, the older ones and what is new since an event: each by the
    conversation's index (the cursor's place by the event ids' unique index)."""
    found: list[dict[str, object] | None] = []
    plans = _plans(
        seeded, lambda state: found.append(view(state, "chat:seed#7", ["chat"], _ADMIN, **cursor))
    )
    (page,) = found
    assert page is not None
    ids = [entry["event_id"] for entry in page["events"]]  # type: ignore[index, union-attr]
    expected = {
        "before": [f"chat:seed#{n}" for n in (8007, 6007, 4007, 2007, 7)],
        "after": [f"chat:seed#{n}" for n in (18007, 16007, 14007, 12007)],
    }
    assert ids == expected.get(
        next(iter(cursor), ""), [f"chat:seed#{n}" for n in range(18007, 0, -2000)]
    )
    for sql, plan in plans:
        assert not _full_scans(sql, plan), f"{sql}\n{plan}"
    (sizes,) = [plan for sql, plan in plans if "AS size FROM events" in sql]
    assert "events_by_conversation" in sizes, sizes
