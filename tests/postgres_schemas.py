"""PostgreSQL for the tests: every schema a test run creates is named after the run.

``RULEKIT_TEST_POSTGRES`` names the server (and database). Each test that needs PostgreSQL gets
a schema of its own, ``rk_<run>_<n>``, where ``<run>`` is unique to this pytest session; the
store selects it through the connection's ``search_path``. At the end of the session every
schema of the run is dropped, also those a failed or killed test left behind, and never a
schema of another run: two copies of the suite can share one database at once.
"""

from __future__ import annotations

import functools
import itertools
import os
import uuid

import pytest

POSTGRES_ENV = "RULEKIT_TEST_POSTGRES"
"""Set to a PostgreSQL URL (e.g. ``postgresql://127.0.0.1:5432/test``) to run those tests."""

RUN_PREFIX = f"rk_{uuid.uuid4().hex[:10]}_"
"""The start of the name of every schema this test run creates."""

_numbers = itertools.count(1)


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


def schema_url() -> str:
    """A storage URL on a new schema of this run (skips the test when there is no server)."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"set {POSTGRES_ENV} to a PostgreSQL URL to run the PostgreSQL tests")
    reason = postgres_unreachable(server)
    if reason:
        pytest.skip(reason)
    separator = "&" if "?" in server else "?"
    return f"{server}{separator}schema={RUN_PREFIX}{next(_numbers)}"


def run_schemas(server: str) -> list[str]:
    """The schemas of this run that exist on ``server``."""
    import psycopg

    with psycopg.connect(server, connect_timeout=3) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, %s)", (RUN_PREFIX,)
        ).fetchall()
    return sorted(row[0] for row in rows)


def drop_run_schemas() -> None:
    """Drop every schema of this run (nothing when no server was used)."""
    server = os.environ.get(POSTGRES_ENV)
    if not server or postgres_unreachable(server):
        return
    import psycopg
    from psycopg import sql

    with psycopg.connect(server, connect_timeout=3, autocommit=True) as conn:
        for schema in run_schemas(server):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
