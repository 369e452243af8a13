"""Backends for the store behaviour suite.

Every behaviour test takes the ``backend`` fixture and runs once per store implementation. A
:class:`Backend` opens stores on one database: for a durable store each :meth:`Backend.open` is
a new connection (another process would see the same), for the in-memory store it is the same
object. To add a store, write a factory and list it in ``BACKENDS``.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rulekit.event import Event
from rulekit.store import JournaledStore, MemoryStore
from rulekit.store.sqlite import SQLiteStore

POSTGRES_ENV = "RULEKIT_TEST_POSTGRES"
"""Set to a PostgreSQL URL (e.g. ``postgresql://127.0.0.1:5432/test``) to test that store."""


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


@functools.cache
def postgres_unreachable(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used for tests, or None when it can."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401 - the store needs it too
    except ImportError as exc:
        return f"{POSTGRES_ENV} is set but {exc.name} is not installed (pip install -e '.[test]')"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return f"the PostgreSQL server in {POSTGRES_ENV} is unreachable: {first_line}"
    return None


def postgres_url() -> str:
    """A URL on a new schema of the test server (skips the test when there is none)."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"set {POSTGRES_ENV} to a PostgreSQL URL to test the PostgreSQL store")
    reason = postgres_unreachable(server)
    if reason:
        pytest.skip(reason)
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}schema=rk_test_{uuid.uuid4().hex[:12]}"


def postgresql_backend(tmp_path: Path) -> Backend:
    from rulekit.store.postgres import PostgresStore, drop_schema

    url = postgres_url()
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


# PostgreSQL joins the parametrization when its server is named (CI sets the variable).
BACKEND_PARAMS = ["memory", "sqlite"] + (["postgresql"] if os.environ.get(POSTGRES_ENV) else [])


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each store implementation in turn, on a fresh database."""
    backend = BACKENDS[request.param](tmp_path)
    yield backend
    for store in backend.opened:
        store.close()
    if backend.cleanup is not None:
        backend.cleanup()


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A storage URL on a schema of its own in the test PostgreSQL server, dropped afterwards
    (the test skips when ``RULEKIT_TEST_POSTGRES`` is unset or the server is unreachable)."""
    from rulekit.store.postgres import drop_schema

    url = postgres_url()
    yield url
    drop_schema(url)


@pytest.fixture
def store(backend: Backend) -> JournaledStore:
    """A store on the backend's fresh database."""
    return backend.open()


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


@pytest.fixture
def make_event() -> Callable[..., Event]:
    """``make_event(event_id, **fields)``: a normalized event with a fixed id."""
    return event


@pytest.fixture
def threads() -> Callable[[Callable[[int], None], int], None]:
    """``threads(work, count)``: run ``work(index)`` in ``count`` threads released together."""
    return run_threads
