"""What only the SQLite store does: its settings, migrations, crash safety and failure modes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rulekit.errors import StoreError, StoreUnavailable
from rulekit.event import Conversation, Event
from rulekit.store import JobSpec
from rulekit.store.migrations.sqlite import MIGRATIONS
from rulekit.store.sqlite import SQLiteStore, schema_status, upgrade_schema

LATEST = len(MIGRATIONS)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "rulekit.sqlite3"


def pragma(store: SQLiteStore, name: str):
    with store.transaction() as state:
        return state.execute(f"PRAGMA {name}").fetchone()[0]


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def schema_rows(path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT version, name FROM schema_version ORDER BY version").fetchall()
    finally:
        conn.close()


# settings ------------------------------------------------------------------------------------


def test_durable_settings_by_default(path):
    store = SQLiteStore(path)
    try:
        assert pragma(store, "journal_mode") == "wal"
        assert pragma(store, "synchronous") == 2  # FULL
        assert pragma(store, "foreign_keys") == 1
        assert pragma(store, "busy_timeout") == 5000
    finally:
        store.close()


def test_synchronous_normal_is_an_opt_down(path):
    store = SQLiteStore(path, synchronous="normal", busy_timeout=0.5)
    try:
        assert pragma(store, "synchronous") == 1  # NORMAL
        assert pragma(store, "busy_timeout") == 500
    finally:
        store.close()
    with pytest.raises(StoreError, match="synchronous must be one of FULL, NORMAL, EXTRA"):
        SQLiteStore(path, synchronous="OFF")


def test_foreign_keys_are_enforced(path):
    store = SQLiteStore(path)
    try:
        with pytest.raises(sqlite3.IntegrityError), store.transaction() as state:
            state.execute(
                "INSERT INTO outbox (event_id, rule, action, params, destination,"
                " next_attempt_at) VALUES ('no-such-event', 'r', 'a', '{}', 'd', 'x')"
            )
    finally:
        store.close()


def test_misuse_is_reported(path):
    store = SQLiteStore(path)
    with store.transaction() as state:
        with pytest.raises(StoreError, match="do not nest"), store.transaction():
            pass
        state.mark_message_seen("c", "m")
    with pytest.raises(StoreError, match="transaction has ended"):
        state.message_seen("c", "m")
    store.close()
    with pytest.raises(StoreError, match="is closed"), store.transaction():
        pass


# migrations ----------------------------------------------------------------------------------


def test_migrations_apply_once(path):
    assert schema_status(path).current == 0
    assert not path.exists()  # asking changes nothing
    SQLiteStore(path).close()
    status = schema_status(path)
    assert (status.current, status.latest, status.up_to_date) == (LATEST, LATEST, True)
    SQLiteStore(path).close()
    SQLiteStore(path).close()
    assert schema_rows(path) == [(m.version, m.name) for m in MIGRATIONS]


def test_concurrent_openers_migrate_once(path, threads):
    stores: list[SQLiteStore] = []
    threads(lambda index: stores.append(SQLiteStore(path)), 4)
    for store in stores:
        store.close()
    assert schema_rows(path) == [(m.version, m.name) for m in MIGRATIONS]
    assert integrity(path) == "ok"


OPENER = """\
import sys, time
from pathlib import Path
from rulekit.store.sqlite import SQLiteStore

path, go, number = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while not go.exists():  # released together
    time.sleep(0.001)
store = SQLiteStore(path)
with store.transaction() as state:
    state.mark_message_seen(f"client-{number}", "m")
store.close()
"""


def test_processes_opening_a_new_file_at_once_migrate_once_and_all_work(path, tmp_path):
    """Separate processes (no lock of the store's own between them) open one new file at once:
    each of them works, and each migration is applied once."""
    go = tmp_path / "go"
    for _ in range(3):
        path.unlink(missing_ok=True)
        go.unlink(missing_ok=True)
        openers = [
            subprocess.Popen(
                [sys.executable, "-c", OPENER, str(path), str(go), str(number)],
                stderr=subprocess.PIPE,
                text=True,
            )
            for number in range(6)
        ]
        go.touch()
        for opener in openers:
            _, errors = opener.communicate(timeout=60)
            assert opener.returncode == 0, errors
        assert schema_rows(path) == [(m.version, m.name) for m in MIGRATIONS]
        store = SQLiteStore(path)
        with store.transaction() as state:
            assert all(state.message_seen(f"client-{number}", "m") for number in range(6))
        store.close()
        for suffix in ("-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_an_opener_waits_for_another_switching_a_new_file_to_wal(path):
    """While another connection writes a new file that is not yet in WAL mode (as an opener
    switching it does), switching it fails at once with "database is locked": SQLite's busy
    handler does not wait for a change of journal mode. The opener retries within its busy
    timeout, so it opens the file once the other is done, instead of failing."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    holding = threading.Event()

    def release() -> None:
        holding.wait()
        time.sleep(0.3)  # holds the lock past the opener's first attempts
        other.execute("ROLLBACK")

    releaser = threading.Thread(target=release)
    releaser.start()
    try:
        holding.set()
        store = SQLiteStore(path)
    finally:
        releaser.join()
        other.close()
    with store.transaction() as state:
        state.mark_message_seen("c", "m")
    store.close()
    assert schema_rows(path) == [(m.version, m.name) for m in MIGRATIONS]


def test_a_newer_schema_is_refused(path):
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future', 'x')",
        (LATEST + 1,),
    )
    conn.commit()
    conn.close()
    assert schema_status(path).too_new
    with pytest.raises(StoreError, match=rf"schema version {LATEST + 1}, newer than this rulekit"):
        SQLiteStore(path)
    with pytest.raises(StoreError, match="newer than this rulekit"):
        upgrade_schema(path)


def test_a_schema_behind_is_upgraded_only_when_allowed(path):
    sqlite3.connect(path).close()  # an empty database file
    steps = tuple(f"{m.version:04d}_{m.name}" for m in MIGRATIONS)
    with pytest.raises(StoreError, match=f"pending: {', '.join(steps)}; run `rulekit db upgrade`"):
        SQLiteStore(path, upgrade=False)
    before, after = upgrade_schema(path)
    assert (before.current, before.pending) == (0, steps)
    assert (after.current, after.pending) == (LATEST, ())
    store = SQLiteStore(path, upgrade=False)
    assert store.schema_status().up_to_date
    store.close()


# crash safety ------------------------------------------------------------------------------


CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from rulekit.event import Conversation, Event
    from rulekit.store import JobSpec
    from rulekit.store.sqlite import SQLiteStore

    store = SQLiteStore(sys.argv[1])
    for n in range(20):
        with store.transaction() as state:
            inbox_id, _ = state.append_inbox("c", b"body", delivery_key=f"k{n}")
            state.save_conversation("c", f"key{n}", Conversation(id=f"conv{n}", status="open"))
            state.record_event(
                Event(id=f"e{n}", channel="c", event="created"), inbox_id=inbox_id, trace={},
                jobs=[JobSpec("r", "slack", {"n": n}, "slack:#x")] * 2,
            )
    print("committed", flush=True)
    in_flight = store.transaction()  # a transaction open when the process dies
    state = in_flight.__enter__()
    state.save_conversation("c", "in-flight", Conversation(id="lost"))
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_committed_work_survives_a_killed_process(path):
    SQLiteStore(path).close()
    child = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -9, child.stderr
    assert child.stdout == "committed\n"
    assert Path(f"{path}-wal").exists()  # the last commits were only in the WAL
    assert integrity(path) == "ok"
    store = SQLiteStore(path)
    try:
        with store.transaction() as state:
            assert len(state.history(limit=100)) == 20
            assert len(state.jobs(limit=100)) == 40
            assert state.get_conversation("c", "key19") == Conversation(id="conv19", status="open")
            assert state.get_conversation("c", "in-flight") is None
    finally:
        store.close()


def test_integrity_after_concurrent_work(path, threads):
    stores = [SQLiteStore(path), SQLiteStore(path)]

    def work(index: int) -> None:
        for n in range(25):
            with stores[index % 2].transaction() as state:
                state.append_inbox("c", b"x" * 2000, delivery_key=f"{index}-{n}")
                state.next_position("rr", 3)
                state.save_conversation("c", f"{index}-{n}", Conversation(id=f"{index}-{n}"))

    threads(work, 4)
    for store in stores:
        store.close()
    assert integrity(path) == "ok"


# failure modes: the daemon answers 503 for these ----------------------------------------------


@contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make files and directories read-only even for root (who ignores permission bits): with
    ``chattr +i`` when running as root, with ``chmod`` otherwise."""
    if os.geteuid() == 0:
        if not shutil.which("chattr"):
            pytest.skip("running as root, and chattr is missing to make a file read-only")
        done = []
        try:
            for item in paths:
                result = subprocess.run(["chattr", "+i", str(item)], capture_output=True)
                if result.returncode != 0:
                    pytest.skip(f"running as root, and chattr +i failed: {result.stderr!r}")
                done.append(item)
            yield
        finally:
            for item in done:
                subprocess.run(["chattr", "-i", str(item)], check=True)
    else:
        modes = {item: item.stat().st_mode for item in paths}
        try:
            for item in paths:
                item.chmod(0o555 if item.is_dir() else 0o444)
            yield
        finally:
            for item, mode in modes.items():
                item.chmod(mode)


@pytest.mark.parametrize("what", ["file", "file and directory"])
def test_a_read_only_database_is_unavailable(tmp_path, what):
    directory = tmp_path / "data"
    directory.mkdir()
    path = directory / "rulekit.sqlite3"
    store = SQLiteStore(path)
    with store.transaction() as state:
        state.mark_message_seen("c", "m1")
    store.close()  # the last connection: the WAL is checkpointed and removed
    targets = [path, directory] if what == "file and directory" else [path]
    with (
        read_only(*targets),
        pytest.raises(StoreUnavailable, match=r"rulekit\.sqlite3 cannot be used: .*read-only"),
    ):
        SQLiteStore(path)
    reopened = SQLiteStore(path)  # writable again: nothing was damaged
    with reopened.transaction() as state:
        assert state.message_seen("c", "m1")
    reopened.close()


def test_a_missing_directory_is_unavailable(tmp_path):
    with pytest.raises(StoreUnavailable, match=r"unable to open database file.*missing"):
        SQLiteStore(tmp_path / "missing" / "rulekit.sqlite3")


def test_a_file_that_is_not_a_database_is_unavailable(path):
    path.write_bytes(b"this is a text file, not SQLite" * 100)
    with pytest.raises(StoreUnavailable, match="not a database"):
        SQLiteStore(path)


def test_a_full_disk_is_unavailable_and_loses_nothing_committed(path, make_event):
    store = SQLiteStore(path)
    try:
        with store.transaction() as state:
            state.append_inbox("c", b"small", delivery_key="kept")
            pages = state.execute("PRAGMA page_count").fetchone()[0]
            # SQLite's own size cap: writes beyond it fail exactly as on a full disk
            state.execute(f"PRAGMA max_page_count = {pages + 2}")
        with pytest.raises(StoreUnavailable, match="full"), store.transaction() as state:
            state.append_inbox("c", os.urandom(64 * 1024), delivery_key="too-big")
            state.record_event(
                make_event("e1"), inbox_id=None, trace={}, jobs=[JobSpec("r", "a", {}, "d")]
            )
        with store.transaction() as state:
            assert [item.delivery_key for item in state.inbox_items()] == ["kept"]
            assert state.get_event("e1") is None
    finally:
        store.close()
    assert integrity(path) == "ok"


def test_the_job_claim_reads_due_jobs_by_their_index_not_every_pending_one(tmp_path):
    store = SQLiteStore(tmp_path / "claim.sqlite3")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with store.transaction() as state:
            event = Event(id="chat:1", channel="chat", event="created")
            retries = [JobSpec("R", "slack", {"n": n}, f"slack:C{n}") for n in range(200)]
            state.record_event(event, inbox_id=None, trace={}, jobs=retries, now=now)
        statements: list[str] = []
        store._conn.set_trace_callback(statements.append)  # type: ignore[union-attr]
        with store.transaction() as state:
            claimed = state.claim_jobs("me", lease=60, limit=10, now=now)
        store._conn.set_trace_callback(None)  # type: ignore[union-attr]
        assert len(claimed) == 10
        claim = next(s for s in statements if s.lstrip().startswith("UPDATE outbox"))
        with store.transaction() as state:
            plan = [row[3] for row in state.execute("EXPLAIN QUERY PLAN " + claim).fetchall()]
        assert any("USING INDEX outbox_due" in step for step in plan), plan
    finally:
        store.close()


def test_the_usual_call_is_started_in_one_statement_and_recorded_in_two(tmp_path):
    store = SQLiteStore(tmp_path / "calls.sqlite3")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        with store.transaction() as state:
            event = Event(id="chat:1", channel="chat", event="created")
            jobs = [JobSpec("R", "slack", {"n": n}, "slack:C1") for n in range(2)]
            state.record_event(event, inbox_id=None, trace={}, jobs=jobs, now=now)
            first, second = state.claim_jobs("me", lease=60, now=now)
        with store.transaction() as state:
            before = state.statements
            assert state.start_call(first.id, "me", lease=60, now=now)
            assert state.statements - before == 1
            state.record_attempt(first.id, "done", result={"ts": "1"}, now=now)
            assert state.statements - before == 3
            # the others are still told apart: not ours, and a job already done
            assert not state.start_call(second.id, "someone else", lease=60, now=now)
            state.record_attempt(first.id, "retry", error="late", retry_at=now, now=now)
            [done, _] = state.jobs(event_id="chat:1")
            assert (done.status, done.attempts, done.result) == ("done", 2, {"ts": "1"})
            assert [a.outcome for a in state.attempts(first.id)] == ["done", "retry"]
    finally:
        store.close()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_a_new_database_and_its_log_are_private_whatever_the_umask(tmp_path):
    # the usual umask makes files readable by every user of the machine: a store holds the
    # clients' conversations, so the file, its log and its shared memory are the owner's alone
    path = tmp_path / "rulekit.sqlite3"
    old = os.umask(0o022)
    try:
        store = SQLiteStore(path)
        with store.transaction() as state:
            state.mark_message_seen("c", "m1")
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        assert wal.exists() and shm.exists()
        assert (_mode(path), _mode(wal), _mode(shm)) == (0o600, 0o600, 0o600)
        store.close()
    finally:
        os.umask(old)


def test_an_existing_database_keeps_the_mode_its_admin_chose(tmp_path):
    path = tmp_path / "rulekit.sqlite3"
    SQLiteStore(path).close()
    path.chmod(0o640)  # e.g. readable by a backup group
    store = SQLiteStore(path)
    with store.transaction() as state:
        state.mark_message_seen("c", "m1")
    assert _mode(path) == 0o640
    assert _mode(Path(f"{path}-wal")) == 0o640
    store.close()


def test_a_database_open_to_every_user_is_told(tmp_path):
    path = tmp_path / "rulekit.sqlite3"
    store = SQLiteStore(path)
    assert store.exposure() is None  # created private
    path.chmod(0o640)  # a group's: the admin's choice
    assert store.exposure() is None
    path.chmod(0o644)  # as an older rulekit made it under the usual umask
    told = store.exposure()
    assert told is not None and "open to every user" in told and "mode 0644" in told
    assert f"chmod 600 {path}*" in told
    store.close()
