"""What several daemons on one PostgreSQL database rely on, with real processes.

Each test runs on a schema of its own (the ``postgres_schema`` fixture) and skips when
``RULEKIT_TEST_POSTGRES`` is unset or its server is unreachable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from rulekit.errors import StoreError
from rulekit.event import Event
from rulekit.store import JobSpec
from rulekit.store.migrations.postgres import MIGRATIONS
from rulekit.store.postgres import PostgresStore, split_url

psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")

# A daemon's processing loop reduced to the store calls: claim an inbox item, record its event
# with a job and finish the item in one transaction; then claim jobs and report them done.
WORKER = textwrap.dedent(
    """
    import json, random, sys, time
    from rulekit.event import Event
    from rulekit.store import JobSpec
    from rulekit.store.postgres import PostgresStore

    url, name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    store = PostgresStore(url, pool_size=2)
    print("ready", flush=True)
    sys.stdin.readline()  # the start signal: every worker begins at once
    done, idle = [], 0
    while idle < 3:
        with store.transaction() as state:
            if mode == "inbox":
                items = state.claim_inbox(name, lease=30, limit=3)
            else:
                items = state.claim_jobs(name, lease=30, limit=3)
        if not items:
            idle += 1
            time.sleep(0.05)
            continue
        idle = 0
        for item in items:
            time.sleep(random.random() / 500)
            with store.transaction() as state:
                if mode == "inbox":
                    body = json.loads(item.body)
                    event = Event(
                        id=f"e{item.id}", channel="chat", event="message",
                        conversation={"id": body["conversation"]},
                    )
                    state.record_event(
                        event, inbox_id=item.id, trace={"by": name, "seq": body["seq"]},
                        jobs=[JobSpec("r", "slack", {"seq": body["seq"]}, "slack:#x")],
                    )
                    state.finish_inbox(item.id)
                else:
                    state.record_attempt(item.id, "done", result={"by": name})
            done.append(item.id)
    store.close()
    print(json.dumps(done), flush=True)
    """
)


def start_workers(url: str, mode: str, count: int) -> list[subprocess.Popen[str]]:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, f"worker-{n}", mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(count)
    ]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    return workers


def results(workers: list[subprocess.Popen[str]]) -> list[list[int]]:
    outputs = []
    for worker in workers:
        out, _ = worker.communicate(timeout=90)
        assert worker.returncode == 0
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


def fill_inbox(store: PostgresStore, conversations: int, per_conversation: int) -> None:
    """Bodies interleaved across conversations, each carrying its conversation's sequence."""
    with store.transaction() as state:
        for seq in range(per_conversation):
            for conv in range(conversations):
                body = json.dumps({"conversation": f"conv-{conv}", "seq": seq}).encode()
                state.append_inbox("chat", body, conversation_key=f"conv-{conv}")


@pytest.mark.slow
def test_concurrent_daemons_never_process_an_item_or_job_twice_and_keep_conversation_order(
    postgres_schema,
):
    store = PostgresStore(postgres_schema)
    fill_inbox(store, conversations=12, per_conversation=25)

    handled = results(start_workers(postgres_schema, "inbox", 3))
    everything = [item for done in handled for item in done]
    assert len(everything) == len(set(everything)) == 300, "an inbox item was handled twice"
    assert all(len(done) > 0 for done in handled), "a worker got no work at all"

    with store.transaction() as state:
        assert state.inbox_items(status="pending") == []
        processed = list(reversed(state.history(limit=1000)))  # processing order
    assert len(processed) == 300
    order: dict[str, list[int]] = defaultdict(list)
    for record in processed:
        order[record.conversation_id or ""].append(record.trace["seq"])
    assert all(seqs == list(range(25)) for seqs in order.values()), order
    # the conversations really were spread over the workers
    by = {record.trace["by"] for record in processed}
    assert len(by) == 3

    sent = results(start_workers(postgres_schema, "jobs", 3))
    jobs = [job for done in sent for job in done]
    assert len(jobs) == len(set(jobs)) == 300, "a job was claimed by two workers"
    with store.transaction() as state:
        assert state.jobs(status="pending") == []
        assert all(len(state.attempts(job)) == 1 for job in jobs[:50])
    store.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from datetime import UTC, datetime
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(sys.argv[1], pool_size=2)
    with store.transaction() as state:
        items = state.claim_inbox("doomed", lease=float(sys.argv[2]), limit=100)
        jobs = state.claim_jobs("doomed", lease=float(sys.argv[2]), limit=100)
    # and a transaction left open, holding row locks, when the process dies
    tx = store.transaction()
    state = tx.__enter__()
    state.claim_inbox("doomed", lease=3600, limit=100)
    state.set_cooldown("r", "conv-0", datetime(2030, 1, 1, tzinfo=UTC))
    print(len(items), len(jobs), flush=True)
    time.sleep(600)
    """
)


def test_claims_of_a_killed_daemon_are_recovered_after_the_lease(postgres_schema):
    store = PostgresStore(postgres_schema)
    fill_inbox(store, conversations=4, per_conversation=3)
    with store.transaction() as state:
        for n in range(5):
            state.record_event(
                Event(id=f"ev{n}", channel="chat", event="message"),
                inbox_id=None,
                trace={},
                jobs=[JobSpec("r", "slack", {"n": n}, "slack:#x")],
            )
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, postgres_schema, "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        # only the oldest item of each of the 4 conversations was claimable
        assert holder.stdout.readline().split() == ["4", "5"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        holder.stdout.close()

    with store.transaction() as state:
        assert state.claim_inbox("survivor", lease=30, limit=100) == []
        assert state.claim_jobs("survivor", lease=30, limit=100) == []
    after_lease = datetime.now(UTC) + timedelta(seconds=3)
    with store.transaction() as state:
        items = state.claim_inbox("survivor", lease=30, limit=100, now=after_lease)
        jobs = state.claim_jobs("survivor", lease=30, limit=100, now=after_lease)
        # the dead transaction's changes are gone with it
        assert state.cooldown_until("r", "conv-0") is None
    assert len(items) == 4 and all(item.attempts == 2 for item in items)
    assert {json.loads(item.body)["seq"] for item in items} == {0}
    assert len(jobs) == 5 and {job.claimed_by for job in jobs} == {"survivor"}
    store.close()


OPENER = textwrap.dedent(
    """
    import sys
    from rulekit.store.postgres import PostgresStore

    sys.stdin.readline()
    PostgresStore(sys.argv[1], pool_size=1).close()
    print("opened", flush=True)
    """
)


def test_concurrent_openers_migrate_once(postgres_schema):
    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, postgres_schema],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    time.sleep(1.0)  # let every interpreter start, then release them together
    for opener in openers:
        assert opener.stdin is not None
        opener.stdin.write("go\n")
        opener.stdin.flush()
    for opener in openers:
        out, err = opener.communicate(timeout=60)
        assert opener.returncode == 0, err
        assert out.strip() == "opened"
    store = PostgresStore(postgres_schema)
    with store.transaction() as state:
        rows = state.execute("SELECT version, name FROM schema_version ORDER BY version")
        assert [(r["version"], r["name"]) for r in rows] == [
            (m.version, m.name) for m in MIGRATIONS
        ]
    store.close()


def test_a_newer_schema_is_refused(postgres_schema):
    store = PostgresStore(postgres_schema)
    with store.transaction() as state:
        state.execute(
            "INSERT INTO schema_version (version, name, applied_at)"
            " VALUES (:version, 'future', now())",
            {"version": len(MIGRATIONS) + 1},
        )
    store.close()
    with pytest.raises(StoreError, match="newer than this rulekit knows"):
        PostgresStore(postgres_schema)


def test_a_connection_the_server_ended_while_idle_is_replaced_before_it_is_used(postgres_schema):
    store = PostgresStore(postgres_schema, pool_size=1)
    with store.transaction() as state:
        pid = state.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]  # type: ignore[index]
    conninfo, _ = split_url(postgres_schema)
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        gone = "SELECT count(*) AS n FROM pg_stat_activity WHERE pid = %s"
        for _ in range(500):  # the server ends the backend after answering the call
            if admin.execute(gone, (pid,)).fetchone()[0] == 0:  # type: ignore[index]
                break
            time.sleep(0.01)
    # the pool's only connection is gone: the next transaction is given a new one, not an error
    with store.transaction() as state:
        assert state.mark_message_seen("chat", "m1") is True
        again = state.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]  # type: ignore[index]
    assert again != pid
    store.close()
    with pytest.raises(StoreError, match="is closed"), store.transaction():
        pass


def test_misuse_is_reported(postgres_schema):
    store = PostgresStore(postgres_schema)
    with store.transaction() as state:
        with pytest.raises(StoreError, match="do not nest"), store.transaction():
            pass
        state.mark_message_seen("c", "m")
    with pytest.raises(StoreError, match="transaction has ended"):
        state.message_seen("c", "m")
    store.close()


def test_send_slots_of_two_daemons_never_deadlock(postgres_schema):
    """Two daemons reserve the send slots of the same 150 destinations at the same moment, in
    opposite orders, each for many calls at once (which group commit would put in one
    transaction): every reservation runs in a transaction of its own, so no daemon ever holds
    one destination's slot while waiting for another's, and the database aborts nothing."""
    import asyncio
    import threading

    from rulekit.actions.pacing import Limit, Pace
    from rulekit.runtime.commit import GroupCommit
    from rulekit.runtime.sharedpace import shared_wait

    keys = [f"slack:#c{n}" for n in range(150)]
    barrier = threading.Barrier(2)
    conflicts: list[int] = []

    def daemon(order: list[str]) -> None:
        async def main() -> None:
            store = PostgresStore(postgres_schema, pool_size=2)
            commit = GroupCommit(store)
            commit.start()
            try:
                paces = [[Pace(key, Limit(10_000, 1.0))] for key in order]
                await asyncio.to_thread(barrier.wait, 10)
                await asyncio.gather(
                    *(shared_wait(commit, pace, stopping=lambda: False) for pace in paces)
                )
                conflicts.append(commit.conflicts)
            finally:
                await commit.aclose()
                store.close()

        asyncio.run(main())

    threads = [threading.Thread(target=daemon, args=(order,)) for order in (keys, keys[::-1])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert conflicts == [0, 0]


def test_a_daemon_hears_of_work_another_one_added_and_not_of_its_own(postgres_schema):
    import queue

    listening, other = PostgresStore(postgres_schema), PostgresStore(postgres_schema)
    heard: queue.Queue[str] = queue.Queue()
    stop = listening.listen(heard.put)

    def next_notices(count: int) -> list[str]:
        return sorted(heard.get(timeout=30) for _ in range(count))

    try:
        # once listening: every queue, for what was added while nobody listened
        assert next_notices(3) == ["inbox", "outbox", "timers"]
        with other.transaction() as state:
            state.append_inbox("chat", b"{}", delivery_key="d1")
        assert next_notices(1) == ["inbox"]
        with other.transaction() as state:
            state.record_event(
                Event(id="e1", channel="chat", event="message", conversation={"id": "c1"}),
                inbox_id=None,
                trace={},
                jobs=[JobSpec("R", "slack", {"text": "hi"}, "slack:#ops")],
            )
            state.set_timer("Later", "c1", "chat", datetime.now(UTC), "e1")
        assert next_notices(2) == ["outbox", "timers"]
        # claims, and work this process adds itself, are not announced to it; a job handed
        # back is (another daemon may take it)
        with listening.transaction() as state:
            state.append_inbox("chat", b"{}", delivery_key="d2")
            assert state.claim_jobs("other", lease=30)
        with other.transaction() as state:
            assert state.claim_inbox("other", lease=30, limit=5)
            assert state.release_claims("other") == 3  # two items and the job
        assert sorted({heard.get(timeout=30), heard.get(timeout=30)}) == ["inbox", "outbox"]
        assert heard.empty()
    finally:
        stop()
        listening.close()
        other.close()


def test_round_trips_are_counted_with_each_transactions_begin_and_end(postgres_schema):
    store = PostgresStore(postgres_schema)
    try:
        before = store.round_trips
        with store.transaction() as state:
            state.mark_message_seen("chat", "m1")
            state.message_seen("chat", "m1")
        with store.transaction():
            pass  # nothing was sent: no BEGIN either
        assert store.round_trips - before == 2 + 2
    finally:
        store.close()


def test_the_ids_of_its_own_connections_stay_those_of_the_open_ones(postgres_schema):
    # the pool replaces its connections (after max_lifetime: drain() does so at once); the
    # ids of those it closed are not the store's any more, nor kept
    store = PostgresStore(postgres_schema, pool_size=2)
    seen = set()
    try:
        for _ in range(40):
            with store.transaction() as state:
                seen.add(state.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"])  # type: ignore[index]
            store._pool.drain()
        with store.transaction() as state:
            current = state.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]  # type: ignore[index]
        assert len(seen) > 10
        assert len(store._backends) <= 2
        assert current in store._backends
        assert not any(pid in store._backends for pid in seen - {current})
    finally:
        store.close()


def test_due_times_and_leases_are_written_by_the_databases_clock(postgres_schema):
    """What a daemon writes that claims compare with the database's clock (a job's due time,
    a lease's end, a requeued job) is written by that clock too: written by the daemon's
    own clock, a daemon five minutes ahead enqueued jobs that no daemon took for five
    minutes, and took other daemons' leases before they ran out."""
    from rulekit.store.records import NewEvent

    def event(n: int) -> Event:
        return Event(
            id=f"e{n}",
            channel="chat",
            event="created",
            occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
            conversation={"id": f"c{n}"},
        )

    job = JobSpec(rule="r", action="autoreply", params={}, destination="autoreply")
    store = PostgresStore(postgres_schema)
    with store.transaction() as state:
        began = state.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
        state.record_event(event(1), inbox_id=None, trace={}, jobs=[job])
        state.record_events([NewEvent(event(n), None, {}, [job]) for n in (2, 3)])
        assert state.hold_lease("poll:chat", "a", 60)
        lease = state.execute("SELECT until FROM leases").fetchone()["until"]  # type: ignore[index]
        jobs = state.jobs(status="pending", limit=10)
    assert [j.next_attempt_at for j in jobs] == [began] * 3
    assert lease == began + timedelta(seconds=60)
    with store.transaction() as state:
        began = state.execute("SELECT now() AS now").fetchone()["now"]  # type: ignore[index]
        state.requeue_job(jobs[0].id)
        (again,) = [j for j in state.jobs(status="pending", limit=10) if j.id == jobs[0].id]
    assert again.next_attempt_at == began
    store.close()


def test_a_purge_passes_over_the_events_another_session_holds(postgres_schema):
    """``rulekit forget`` (or another daemon) holds some old events while a daemon's purge
    deletes old events with their jobs and attempts: the purge deleted the attempts and jobs
    first and then waited for the held events, while the erasure, holding them, waited to
    rewrite those very attempts: a deadlock, or a purge failing at the lock timeout. The purge
    now leaves the held events for its next round and waits for nothing."""
    from rulekit.audit import retention
    from rulekit.config import RetentionSettings

    old = datetime.now(UTC) - timedelta(days=400)
    url = postgres_schema + "&lock_timeout=1"
    store = PostgresStore(url)
    job = JobSpec(rule="r", action="autoreply", params={}, destination="autoreply")
    with store.transaction() as state:
        for n in range(6):
            event = Event(
                id=f"e{n}",
                channel="chat",
                event="created",
                occurred_at=old,
                conversation={"id": f"c{n}"},
            )
            state.record_event(event, inbox_id=None, trace={}, jobs=[job], now=old)
        for pending in state.jobs(status="pending", limit=10):
            state.record_attempt(pending.id, "done", now=old)
    conninfo, _ = split_url(postgres_schema)
    schema = postgres_schema.rsplit("schema=", 1)[1]
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as holder:
        held = "SELECT event_id FROM events WHERE event_id IN ('e2', 'e4') FOR UPDATE"
        assert len(holder.execute(held).fetchall()) == 2
        counts = retention.purge(store, RetentionSettings(), batch=100)
        # what the erasure does next, with the events it holds: nothing waits for the purge
        holder.execute(
            "UPDATE attempts SET error = NULL WHERE job_id IN"
            " (SELECT id FROM outbox WHERE event_id IN ('e2', 'e4'))"
        )
        holder.commit()
    assert (counts["events"], counts["jobs"], counts["attempts"]) == (4, 4, 4)
    with store.transaction() as state:
        assert sorted(r.event_id for r in state.history(limit=10)) == ["e2", "e4"]
    assert retention.purge(store, RetentionSettings())["events"] == 2  # its next round
    store.close()


def test_forget_runs_again_when_the_database_ends_it_in_a_deadlock(postgres_schema):
    """A daemon recording a client's next event holds the conversation and then the client;
    ``rulekit forget`` holds the client and then the conversation. When they meet, the
    database ends one of them (a deadlock); the daemon's round runs again, but ``rulekit
    forget`` failed ("a conflict: deadlock detected") and erased nothing. It now runs again."""
    import threading

    from rulekit.audit.privacy import forget

    store = PostgresStore(postgres_schema)
    event = Event(
        id="e1",
        channel="chat",
        event="created",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        conversation={"id": "c1"},
        client={"id": "k1", "name": "Bob Smith"},
    )
    with store.transaction() as state:
        state.record_event(event, inbox_id=None, trace={})
        state.execute(
            "INSERT INTO clients (channel, id, data, updated_at)"
            ' VALUES (\'chat\', \'k1\', \'{"id": "k1", "name": "Bob Smith"}\', now())'
        )
        state.execute(
            "INSERT INTO conversations (channel, key, id, status, data, updated_at, active_at)"
            " VALUES ('chat', 'c1', 'c1', 'open', '{\"id\": \"c1\"}', now(), now())"
        )
    conninfo, _ = split_url(postgres_schema)
    schema = postgres_schema.rsplit("schema=", 1)[1]
    results: list[object] = []
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as daemon:
        daemon.execute("SELECT 1 FROM conversations WHERE id = 'c1' FOR UPDATE")
        erasing = threading.Thread(
            target=lambda: results.append(_outcome(lambda: forget(store, "k1")))
        )
        erasing.start()
        waiting = (
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND a.query LIKE '%conversations%'"
        )
        with psycopg.connect(conninfo, autocommit=True) as admin:
            for _ in range(1000):  # the erasure holds the client and waits for the conversation
                if admin.execute(waiting).fetchone()[0]:  # type: ignore[index]
                    break
                time.sleep(0.01)
        # the daemon wants the client next: one of the two is ended by the database
        try:
            daemon.execute("SELECT 1 FROM clients WHERE id = 'k1' FOR UPDATE")
            daemon.commit()
        except psycopg.errors.DeadlockDetected:
            daemon.rollback()
        erasing.join(30)
    (outcome,) = results
    assert isinstance(outcome, dict) and outcome["clients"] == 1, outcome
    with store.transaction() as state:
        assert state.get_client("chat", "k1") is None
    store.close()


def _outcome(work):  # type: ignore[no-untyped-def]
    try:
        return work()
    except Exception as exc:  # the test reports it
        return exc
