"""A job claim costs in proportion to the jobs it reads, not to their square.

One webhook can put thousands of jobs in one lane (a transcript of thousands of messages, each
answered; a Slack channel's notifications behind a failing call), and the dispatcher claims
again and again while they wait. The claim used to ask, for every due job, whether its lane
was held or blocked, reading the whole lane each time: with 15,000 jobs in a lane one claim
took over a minute, holding the store (and every webhook waiting to be acknowledged). The work
a claim does is counted by the database itself, never timed: doubling the lane must about
double it. SQLite counts its virtual machine's steps; PostgreSQL the rows its scans read from
``outbox`` (the transaction's table counters), on a table without planner statistics, as it is
just after one webhook filled the lane and before autovacuum analysed it: the planner then
guessed one due job, and its plan checked every due job's lane before sorting them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from postgres_schemas import POSTGRES_ENV
from store_backends import BACKENDS, Backend

from rulekit.event import Conversation, Event
from rulekit.store import JournaledStore
from rulekit.store.records import JobSpec

NOW = datetime(2026, 6, 1, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
SMALL, LARGE = 1_500, 3_000
STEPS = 100
"""SQLite virtual-machine instructions per progress callback."""


@pytest.fixture(params=["sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else []))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend: Backend = BACKENDS[request.param](tmp_path)
    try:
        yield backend
    finally:
        for opened in backend.opened:
            opened.close()
        if backend.cleanup is not None:
            backend.cleanup()


def _lane(store: JournaledStore, name: str, count: int, *, head_waits: bool) -> None:
    """``count`` pending jobs in lane ``name``, all due; with ``head_waits``, its oldest job
    is due only later (a retry in backoff), which blocks the others."""
    with store.transaction() as state:
        inbox_id, _ = state.append_inbox("chat", b"{}", delivery_key=name, now=NOW)
        conversation = Conversation(id=f"chat:{name}", status="open")
        event = Event(
            id=f"chat:{name}", channel="chat", event="message", occurred_at=NOW,
            conversation=conversation,
        )  # fmt: skip
        job = JobSpec("Reply", "autoreply", {"text": "hi"}, name, lane=name)
        state.record_event(event, inbox_id=inbox_id, trace={}, jobs=[job], now=NOW)
        numbers = "WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < {})"
        state.execute(  # type: ignore[attr-defined]
            f"{numbers.format(count)} INSERT INTO outbox (event_id, rule, action, params,"
            " destination, lane, status, next_attempt_at) SELECT event_id, rule, action,"
            " params, destination, lane, status, next_attempt_at FROM outbox, n"
            " WHERE outbox.lane = :lane AND n.i <= :count",
            {"lane": name, "count": count},
        )
        if head_waits:
            state.execute(  # type: ignore[attr-defined]
                "UPDATE outbox SET next_attempt_at = :later WHERE id ="
                " (SELECT min(id) FROM outbox WHERE lane = :lane)",
                {"later": state.dialect.time(LATER), "lane": name},  # type: ignore[attr-defined]
            )


def _empty(store: JournaledStore) -> None:
    """No jobs; on PostgreSQL, an ``outbox`` never analysed (a new table), which autovacuum
    leaves so."""
    with store.transaction() as state:
        if state.dialect.name == "SQLite":  # type: ignore[attr-defined]
            state.execute("DELETE FROM outbox")  # type: ignore[attr-defined]
            return
        state.execute("TRUNCATE outbox, attempts")  # type: ignore[attr-defined]
        state.execute(  # type: ignore[attr-defined]
            "ALTER TABLE outbox SET (autovacuum_enabled = off)"
        )


READ = (
    "SELECT seq_tup_read + COALESCE(idx_tup_fetch, 0) AS n FROM pg_stat_xact_user_tables"
    " WHERE relid = 'outbox'::regclass"
)
"""The rows of ``outbox`` the transaction's scans have read so far (PostgreSQL)."""


def _work(store: JournaledStore) -> tuple[int, list[str]]:
    """The work of one claim, and the lanes of the jobs it claimed."""
    with store.transaction() as state:
        conn: Any = state.conn  # type: ignore[attr-defined]
        if state.dialect.name != "SQLite":  # type: ignore[attr-defined]
            before = conn.execute(READ).fetchone()["n"]
            jobs = state.claim_jobs("me", lease=60, limit=10, now=NOW)
            read = conn.execute(READ).fetchone()["n"] - before
            return read, sorted({job.lane for job in jobs})
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        conn.set_progress_handler(count, STEPS)
        try:
            jobs = state.claim_jobs("me", lease=60, limit=10, now=NOW)
        finally:
            conn.set_progress_handler(None, STEPS)
    return steps[0], sorted({job.lane for job in jobs})


@pytest.mark.parametrize("head_waits", [False, True], ids=["all-due", "behind-a-retry"])
def test_a_claim_costs_in_proportion_to_a_lanes_jobs(backend: Backend, head_waits: bool) -> None:
    work = {}
    for count in (SMALL, LARGE):
        store = backend.open()
        _empty(store)
        small, big = f"small-{count}", f"big-{count}"
        _lane(store, small, 1, head_waits=False)  # (the oldest job)
        _lane(store, big, count, head_waits=head_waits)
        work[count], lanes = _work(store)
        # the big lane's due prefix (none behind its waiting head), and the other lane
        assert lanes == ([small] if head_waits else [big, small])
    assert work[LARGE] < 3 * work[SMALL], work  # linear: about twice; quadratic: four times


class _Undone(Exception):
    """Raised to roll a transaction back."""


@pytest.mark.parametrize("jobs", [0, 3], ids=["none-claimed", "some-claimed"])
def test_a_postgresql_claim_leaves_the_planner_settings_as_they_were(
    postgres_schema: str, jobs: int
) -> None:
    """The claim turns sorts off for its own plan only: whatever shares its transaction (a
    group commit's other work) is planned as it would be without it."""
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(postgres_schema)
    try:
        if jobs:
            _lane(store, "busy", jobs, head_waits=False)
        for setting in ("on", "off"):
            with pytest.raises(_Undone), store.transaction() as state:
                state.execute(f"SET LOCAL enable_sort = {setting}")  # type: ignore[attr-defined]
                assert len(state.claim_jobs("me", lease=60, now=NOW)) == jobs
                shown = state.execute("SHOW enable_sort").fetchone()  # type: ignore[attr-defined]
                assert shown["enable_sort"] == setting
                raise _Undone
    finally:
        store.close()
