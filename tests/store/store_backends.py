"""Store implementations under test and small helpers shared by the store behaviour suite.

A :class:`Backend` opens stores on one database: for a durable store each :meth:`Backend.open` is
a new connection (another process would see the same), for the in-memory store it is the same
object. To add a store, write a factory and list it in ``BACKENDS``. Test modules import from
here (never from ``conftest``, whose module name other test folders share).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from postgres_schemas import schema_url

from rulekit.event import Event
from rulekit.store import JournaledStore, MemoryStore
from rulekit.store.sqlite import SQLiteStore


@dataclass
class Backend:
    """One store implementation under test, on one database."""

    name: str
    durable: bool
    factory: Callable[[], JournaledStore]
    opened: list[JournaledStore] = field(default_factory=list)
    cleanup: Callable[[], None] | None = None
    """Run after the test's stores are closed (e.g. drop the test's PostgreSQL schema)."""
    url: str | None = None
    """The storage URL of this backend's database, for subprocesses (durable stores)."""

    def open(self) -> JournaledStore:
        """A store on this backend's database (closed when the test ends)."""
        store = self.factory()
        self.opened.append(store)
        return store


def memory_backend(tmp_path: Path) -> Backend:
    store = MemoryStore()
    return Backend("memory", durable=False, factory=lambda: store)


def sqlite_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "rulekit.sqlite3"
    return Backend(
        "sqlite", durable=True, factory=lambda: SQLiteStore(path), url=f"sqlite:///{path}"
    )


def postgresql_backend(tmp_path: Path) -> Backend:
    from rulekit.store.postgres import PostgresStore, drop_schema

    url = schema_url()
    return Backend(
        "postgresql",
        durable=True,
        factory=lambda: PostgresStore(url),
        cleanup=lambda: drop_schema(url),
        url=url,
    )


BACKENDS: dict[str, Callable[[Path], Backend]] = {
    "memory": memory_backend,
    "sqlite": sqlite_backend,
    "postgresql": postgresql_backend,
}


def event(event_id: str, **fields) -> Event:
    """A normalized event with a fixed id (a fixture's helper: ``make_event``)."""
    data = {
        "channel": "online-chat",
        "event": "message",
        "occurred_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        "conversation": {"id": "conv-1"},
        **fields,
    }
    return Event(id=event_id, **data)


def run_threads(work: Callable[[int], None], count: int) -> None:
    """Run ``work(index)`` in ``count`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    if errors:
        raise errors[0]
