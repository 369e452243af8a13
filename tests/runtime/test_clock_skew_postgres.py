"""Daemons whose machines' clocks disagree, sharing one PostgreSQL database: the database's
clock decides when a timer falls due and when a claim runs out, never a daemon's own.

Runs when ``RULEKIT_TEST_POSTGRES`` names a reachable server; skipped otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from daemons import wait_for, write_setup
from test_timers_daemon import replies, rules, started_now

AHEAD = timedelta(minutes=5)
"""How far the skewed daemon's clock runs ahead of the database's."""


def on_postgres(config, url: str) -> None:
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {url}")
    )


def database_now(url: str) -> datetime:
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        with store.transaction() as state:
            row = state.execute("SELECT clock_timestamp() AS now").fetchone()
            return row["now"]
    finally:
        store.close()


def stored_timers(url: str) -> list:
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        with store.transaction() as state:
            return state.timers(limit=100)
    finally:
        store.close()


@pytest.mark.slow
def test_a_daemon_whose_clock_runs_ahead_fires_no_timer_early(
    tmp_path, serve, chatra, postgres_url
):
    """A daemon five minutes ahead took the timer of a three-second rule at once (due by its
    clock), and enqueued the reply due five minutes later by the database's clock, which the
    claims of jobs go by: the client got it neither at the rule's time nor for five minutes.
    The daemon now fires by the database's clock, and its reply goes out at once."""
    config = write_setup(tmp_path, rules(after="3s"), chatra=chatra)
    on_postgres(config, postgres_url)
    ahead = serve(config, clock=lambda: datetime.now(UTC) + AHEAD)
    assert httpx.post(ahead.webhook_url, content=started_now(1)).status_code == 200
    (timer,) = wait_for(lambda: stored_timers(postgres_url), timeout=10)
    wait_for(lambda: replies(chatra), timeout=30)
    answered = database_now(postgres_url)
    assert answered >= timer.due, f"answered {(timer.due - answered).total_seconds():.1f}s early"
    (fired,) = wait_for(
        lambda: [t for t in stored_timers(postgres_url) if t.status == "fired"], timeout=10
    )
    assert fired.id == timer.id
    assert replies(chatra) == ["client00000001"]
