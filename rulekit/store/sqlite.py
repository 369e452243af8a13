"""The durable SQLite store: the daemon's default, one file next to the config.

Durability is the default: the database runs in WAL mode with ``synchronous=FULL``, so a
transaction that returned has been fsynced and survives a crash or a power cut. ``NORMAL`` is
the documented opt-down (see docs/operations.md): commits are not fsynced one by one, so a
power cut (not a process crash) may lose the last transactions, never the file's integrity.

Threads: a store holds **one connection and a lock**; a transaction holds the lock from
``BEGIN IMMEDIATE`` to ``COMMIT``. SQLite runs one writer at a time anyway, and the lock hands
the turn from thread to thread at once instead of leaving them in SQLite's sleeping busy
handler. Several processes (or several stores on one file) are serialized by ``BEGIN
IMMEDIATE`` and the busy timeout. Transactions must therefore stay short: no HTTP inside.

Errors that mean "cannot persist right now" (read-only file, full disk, I/O error, locked past
the busy timeout) are raised as :class:`~rulekit.errors.StoreUnavailable`.

**The file is the one at the path.** An open connection keeps writing to its file even after
the file was deleted or replaced (a restore, a mistaken ``rm``): every commit would then land in
a file nobody will ever open again. So each transaction compares the path's identity (device and
inode, one ``stat``) with the file opened, before it starts and after it commits; when they
differ the store is unavailable (:meth:`SQLiteStore.problem` says why) until the file at the
path is the opened one again. A restart opens whatever file the path names. The write-ahead log
(``<path>-wal``) holds the latest commits until a checkpoint copies them into the file, so its
identity is checked the same way: a deleted log would take every later commit with it.

**A new file is the daemon user's alone** (mode ``0600``, whatever the umask): it holds the
clients' conversations. SQLite gives the ``-wal`` and ``-shm`` files it makes the database
file's mode, so they are private too. An existing file keeps the mode it has (the admin's
choice).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from rulekit.errors import StoreError, StoreUnavailable
from rulekit.store.base import JournaledStore
from rulekit.store.migrations import SchemaStatus, status_of
from rulekit.store.migrations.sqlite import MIGRATIONS
from rulekit.store.records import utc
from rulekit.store.sql.sqlite import SQLITE, unavailable_error
from rulekit.store.sql.state import SQLState

SYNCHRONOUS_LEVELS = ("FULL", "NORMAL", "EXTRA")
"""The ``synchronous`` settings a store accepts (``OFF`` is never safe for a journal)."""

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a writer waits for another process's transaction before giving up."""


def _statements(script: str) -> Iterator[str]:
    """The statements of a script, one by one (``executescript`` would commit midway)."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:60]!r}")


def _read_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if not exists:
        return 0
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def _too_new(path: Path, status: SchemaStatus) -> StoreError:
    return StoreError(
        f"SQLite store {path} has schema version {status.current}, newer than this rulekit "
        f"knows ({status.latest}): it was used by a newer rulekit. Upgrade rulekit, or restore "
        "a backup taken before the newer version ran."
    )


def apply_migrations(conn: sqlite3.Connection, path: Path) -> SchemaStatus:
    """Apply the pending steps in one ``BEGIN IMMEDIATE`` transaction (the version is re-read
    under the write lock, so concurrent openers apply each step once)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        status = status_of(_read_version(conn), MIGRATIONS)
        if status.too_new:
            raise _too_new(path, status)
        now = utc().isoformat(timespec="microseconds")
        for step in MIGRATIONS[status.current :]:
            for statement in _statements(step.sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, now),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return status_of(_read_version(conn), MIGRATIONS)


def schema_status(path: str | os.PathLike[str]) -> SchemaStatus:
    """Where the schema of the database at ``path`` stands, changing nothing (``rulekit db
    status``). A missing file is version 0."""
    path = Path(path)
    if not path.exists():
        return status_of(0, MIGRATIONS)
    try:
        conn = sqlite3.connect(path, timeout=DEFAULT_BUSY_TIMEOUT)
        try:
            return status_of(_read_version(conn), MIGRATIONS)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        unavailable = unavailable_error(path, exc)
        if unavailable is None:
            raise
        raise unavailable from exc


def upgrade_schema(path: str | os.PathLike[str]) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply pending migrations (``rulekit db upgrade``); return the status before and after."""
    before = schema_status(path)
    SQLiteStore(path, upgrade=True).close()
    return before, schema_status(path)


class SQLiteStore(JournaledStore):
    """Conversation state and the daemon's journal in one SQLite file.

    ``synchronous`` is ``"FULL"`` (default: every commit is on disk when it returns) or
    ``"NORMAL"`` (faster; a power cut may lose the last commits). ``upgrade=False`` refuses a
    schema that is behind instead of migrating it. A schema newer than this code always refuses.
    ``writes=False``: the store is opened to be read (:meth:`reading`) only, so opening it does
    not check that the file can be written (a check that takes the write lock, and so waits for
    any writer's transaction to end).
    """

    _conn: sqlite3.Connection | None
    _reader: sqlite3.Connection | None
    _identity: tuple[int, int] | None
    _wal_identity: tuple[int, int] | None
    _holder: int | None

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        upgrade: bool = True,
        writes: bool = True,
    ) -> None:
        level = synchronous.upper()
        if level not in SYNCHRONOUS_LEVELS:
            raise StoreError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_LEVELS)}, not {synchronous!r}"
            )
        self._setup(Path(path), level)
        try:
            self._conn = self._open(busy_timeout, upgrade, writes)
            self._identity = _identity(self.path)
            self._wal_identity = _wal_identity(self.path)
        except sqlite3.Error as exc:
            unavailable = unavailable_error(self.path, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _setup(self, path: Path, synchronous: str) -> None:
        """The fields of a store before its database is open (the memory store's too)."""
        self.path = path
        # checked before and after each transaction: the names made once
        self._names = (os.fspath(path), os.fspath(_wal_path(path)))
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._holder = None
        self._conn = None
        self._reader = None
        self._read_lock = threading.Lock()
        self._identity = None
        self._wal_identity = None

    def _open(self, busy_timeout: float, upgrade: bool, writes: bool) -> sqlite3.Connection:
        _create_private(self.path)
        # isolation_level=None: the module issues no implicit BEGIN/COMMIT; we do it ourselves.
        conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            mode = _switch_to_wal(conn, busy_timeout)
            if str(mode).lower() != "wal":
                raise StoreUnavailable(
                    f"SQLite store {self.path} cannot switch to WAL mode (it stays in {mode!r}); "
                    "is the file or its directory read-only?"
                )
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Deleted and rewritten rows are overwritten with zeros rather than left in free
            # space, so that `rulekit forget` (and retention) really remove the bytes.
            conn.execute("PRAGMA secure_delete = ON")
            status = status_of(_read_version(conn), MIGRATIONS)
            if status.too_new:
                raise _too_new(self.path, status)
            if not status.up_to_date:
                if not upgrade:
                    raise StoreError(
                        f"SQLite store {self.path}: {status}; run `rulekit db upgrade`"
                    )
                apply_migrations(conn, self.path)
            if not writes:  # (the probe takes the write lock: it waits for a daemon's write)
                return conn
            # Fail now, not on the first webhook, when the file cannot be written: SQLite only
            # notices a read-only file at the first change, so make one and roll it back.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at)"
                    " VALUES (-1, 'write probe', '')"
                )
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def transaction(self) -> Iterator[SQLState]:
        if self._holder == threading.get_ident():
            raise StoreError("transactions do not nest: this thread is already inside one")
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"SQLite store {self.path} is closed")
            self._holder = threading.get_ident()
            try:
                self._check_identity()
                state = SQLState(conn, str(self.path), SQLITE)
                state.execute("BEGIN IMMEDIATE")
                changes = conn.total_changes
                try:
                    yield state
                    state.execute("COMMIT")
                    state.wrote = conn.total_changes != changes
                    # the commit is only worth something if the file is still the one at the
                    # path: raising now turns an acknowledgement into a 503 (retried later)
                    self._check_identity()
                except BaseException:
                    # A failed ROLLBACK must not hide the error that caused it.
                    with suppress(sqlite3.Error):
                        if conn.in_transaction:
                            conn.execute("ROLLBACK")
                    raise
                finally:
                    state.active = False
            finally:
                self._holder = None

    @contextmanager
    def reading(self) -> Iterator[SQLState]:
        """A read-only snapshot on a connection of its own: in WAL mode it never waits for the
        writer, nor holds it up."""
        with self._read_lock:
            if self._conn is None:
                raise StoreError(f"SQLite store {self.path} is closed")
            # a new reader must not open (and so create) a file that is not the opened one
            self._check_identity()
            try:
                if self._reader is None:
                    self._reader = sqlite3.connect(
                        self.path, isolation_level=None, check_same_thread=False
                    )
                    self._reader.row_factory = sqlite3.Row
                    self._reader.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise unavailable_error(self.path, exc) or exc from exc
            state = SQLState(self._reader, str(self.path), SQLITE)
            state.execute("BEGIN")  # deferred: a snapshot that takes no write lock
            try:
                yield state
            finally:
                state.active = False
                with suppress(sqlite3.Error):
                    if self._reader.in_transaction:
                        self._reader.execute("ROLLBACK")

    def problem(self) -> str | None:
        """Why the store cannot be used now (its file was deleted or replaced), or None."""
        if self._conn is None:
            return f"SQLite store {self.path} is closed"
        try:
            self._check_identity()
        except StoreUnavailable as exc:
            return str(exc)
        return None

    def _check_identity(self) -> None:
        database, wal_name = self._names
        try:
            current = _identity(database)
        except FileNotFoundError:
            raise StoreUnavailable(
                f"SQLite store {self.path} cannot be used: the file was deleted (or renamed) "
                "while open; put it back (or restart rulekit to start a new one)"
            ) from None
        except OSError as exc:
            raise StoreUnavailable(f"SQLite store {self.path} cannot be used: {exc}") from None
        if current != self._identity:
            raise StoreUnavailable(
                f"SQLite store {self.path} cannot be used: the file at this path was replaced "
                "while open (another file has its name now); restart rulekit to use it"
            )
        if self._wal_identity is not None:
            try:
                wal = _identity(wal_name)
            except OSError:
                wal = None
            if wal != self._wal_identity:
                raise StoreUnavailable(
                    f"SQLite store {self.path} cannot be used: its write-ahead log "
                    f"{_wal_path(self.path).name} was deleted or replaced while open; stop "
                    "rulekit cleanly (closing copies the open log into the database), then "
                    "start it again"
                )

    def schema_status(self) -> SchemaStatus:
        """Where this store's schema stands."""
        with self.transaction() as state:
            return status_of(_read_version(state.conn), MIGRATIONS)

    def checkpoint(self, attempts: int = 5) -> bool:
        """Copy the write-ahead log into the database file and truncate it to zero bytes, so
        that the log keeps no older copy of erased rows; false when readers (a daemon in the
        middle of transactions) kept it from completing ``attempts`` times, each waiting up to
        the busy timeout."""
        for attempt in range(attempts):
            with self._lock:
                if self._conn is None:
                    raise StoreError(f"SQLite store {self.path} is closed")
                busy: int = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            if busy == 0:
                return True
            time.sleep(0.05 * (attempt + 1))  # a daemon's transactions are short
        return False

    def exposure(self) -> str | None:
        """The database file or its write-ahead log readable or writable by every user of the
        machine (a file made by an older rulekit with the umask's ``0644``), or None."""
        for path in (self.path, _wal_path(self.path)):
            try:
                mode = path.stat().st_mode & 0o777
            except OSError:
                continue
            if mode & 0o007:
                return (
                    f"SQLite store {path} is open to every user of this machine (mode "
                    f"{mode:04o}): it holds the clients' conversations; make it private with "
                    f"chmod 600 {self.path}*"
                )
        return None

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL when the last one closes)."""
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, synchronous={self.synchronous!r})"


PRIVATE_MODE = 0o600
"""The mode of a database file the store creates (its log and shared memory take it too)."""


def _create_private(path: Path) -> None:
    """Create ``path`` empty (an empty file is an empty database) with :data:`PRIVATE_MODE`
    unless something is there already. SQLite would create it with the umask's mode, readable
    by every user of the machine under the usual ``022``. A failure is left for SQLite to
    report (a missing or read-only directory) with its own words."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, PRIVATE_MODE)
    except OSError:
        return
    try:
        os.fchmod(fd, PRIVATE_MODE)  # exactly: a umask such as 0277 would leave it unwritable
    finally:
        os.close(fd)


def _wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def _wal_identity(path: Path) -> tuple[int, int] | None:
    """The write-ahead log the open connection writes to (it exists once the connection has
    run a transaction in WAL mode, and stays while any connection is open), or None."""
    try:
        return _identity(_wal_path(path))
    except FileNotFoundError:
        return None


def _identity(path: str | Path) -> tuple[int, int]:
    """The file a path names now: (device, inode)."""
    info = os.stat(path)
    return info.st_dev, info.st_ino


def _switch_to_wal(conn: sqlite3.Connection, wait: float) -> str:
    """Switch to WAL mode and return the journal mode in force. Several processes opening a new
    file at once contend for the switch (it needs the file to themselves): the pragma answers
    the old mode while others read the file, and fails with "database is locked" at once while
    another writes it (SQLite's busy handler does not wait for a change of journal mode). Both
    are retried for ``wait`` seconds (the busy timeout: how long any writer waits for another),
    at random intervals, since openers that retry in step collide again; then the mode in force
    is returned, or the error raised."""
    deadline = time.monotonic() + wait
    mode = ""
    while True:
        try:
            mode = str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        else:
            if mode.lower() == "wal" or time.monotonic() > deadline:
                return mode
        time.sleep(random.uniform(0.002, 0.05))
