"""The in-memory store (``memory://``): state for ``rulekit test`` and for tests.

It is the SQLite store on SQLite's ``:memory:`` database: the same SQL as the durable stores
(:class:`~rulekit.store.sql.state.SQLState`), so a dry run goes through the daemon's own
statements, and a transaction is kept or dropped whole. A new store is a copy of an empty
database migrated once per process (a copy takes a fraction of a millisecond; migrating takes
several, and ``rulekit test`` opens a store per suite test). Nothing is kept once the store is
closed: it refuses transactions from then on.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rulekit.store.sql.state import SQLState
from rulekit.store.sqlite import SQLiteStore, apply_migrations

MEMORY = Path(":memory:")

_template: sqlite3.Connection | None = None
_template_lock = threading.Lock()


def _connect() -> sqlite3.Connection:
    # isolation_level=None: the store issues BEGIN and COMMIT itself, as SQLiteStore does.
    return sqlite3.connect(MEMORY, isolation_level=None, check_same_thread=False)


def _new_database() -> sqlite3.Connection:
    """A new in-memory database with the current schema."""
    global _template
    conn = _connect()
    with _template_lock:
        if _template is None:
            template = _connect()
            apply_migrations(template, MEMORY)
            _template = template
        _template.backup(conn)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


class MemoryStore(SQLiteStore):
    """A :class:`SQLiteStore` whose database lives in memory, as long as the store is open."""

    def __init__(self) -> None:
        # No file: nothing of SQLiteStore's opening (WAL, durability, the file's identity).
        self._setup(MEMORY, "OFF")
        self._conn = _new_database()

    def _check_identity(self) -> None:
        """A database in memory has no file that could be replaced."""

    @contextmanager
    def reading(self) -> Iterator[SQLState]:
        """A transaction that may only read: the database lives in this one connection."""
        with self.transaction() as state:
            state.execute("PRAGMA query_only = ON")
            try:
                yield state
            finally:
                state.execute("PRAGMA query_only = OFF")

    def __repr__(self) -> str:
        return "MemoryStore()"
