"""Fixtures of the store behaviour suite.

Every behaviour test takes the ``backend`` fixture and runs once per store implementation. A
:class:`Backend` opens stores on one database: for a durable store each :meth:`Backend.open` is
a new connection (another process would see the same), for the in-memory store it is the same
object. To add a store, write a factory and list it in ``BACKENDS``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postgres_schemas import POSTGRES_ENV, schema_url
from store_backends import BACKENDS, Backend, event, run_threads

from rulekit.event import Event
from rulekit.store import JournaledStore

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

    url = schema_url()
    yield url
    drop_schema(url)


@pytest.fixture
def store(backend: Backend) -> JournaledStore:
    """A store on the backend's fresh database."""
    return backend.open()


@pytest.fixture
def make_event() -> Callable[..., Event]:
    """``make_event(event_id, **fields)``: a normalized event with a fixed id."""
    return event


@pytest.fixture
def threads() -> Callable[[Callable[[int], None], int], None]:
    """``threads(work, count)``: run ``work(index)`` in ``count`` threads released together."""
    return run_threads
