"""Presence shared by daemons whose machines' clocks disagree, on one PostgreSQL database: an
agent's connection runs by the database's clock, so the daemon that assigns sees them online
whichever daemon's console their page is connected to.

Runs when ``RULEKIT_TEST_POSTGRES`` names a reachable server; skipped otherwise.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from console_helpers import ANN, ConsoleServer, console_app, serve
from test_console_http import open_stream
from workspace_helpers import wait_for

from rulekit.runtime.feed import LiveFeed
from rulekit.server.console import Console
from rulekit.snapshot import load_snapshot
from rulekit.store import open_store

BEHIND = timedelta(minutes=2)
"""How far the console's machine's clock runs behind the database's."""


@pytest.fixture
def console_on_postgres(
    console_files: Path, tmp_path: Path, postgres_url: str
) -> Iterator[ConsoleServer]:
    snapshot = load_snapshot(console_files, tmp_path / "rules.d")
    store = open_store(postgres_url, tmp_path)
    feed = LiveFeed()
    console = Console(feed, lambda: snapshot, store, keepalive=0.3)
    console.presence.now = lambda: datetime.now(UTC) - BEHIND
    try:
        with serve(console_app(console)) as (url, loop):
            yield ConsoleServer(url, feed, store, snapshot, console, loop)
    finally:
        store.close()


def test_a_console_whose_clock_runs_behind_keeps_its_agents_online_for_the_others(
    console_on_postgres: ConsoleServer, postgres_url: str, tmp_path: Path
) -> None:
    """The console wrote "connected until" by its own clock, two minutes behind: to every other
    daemon (and to its own ``assign``, which reads the database's time) the agent's connection
    had run out before it was written, and ``assign`` with ``only_online`` found nobody."""
    other = open_store(postgres_url, tmp_path)  # another daemon's, as assign reads it
    try:
        with console_on_postgres.client("ann") as ann:
            context, _lines = open_stream(ann, console_on_postgres)
            try:

                def online() -> bool:
                    with other.reading() as state:
                        return state.presence().get(ANN.lower()) == "online"

                wait_for(online, "Ann online for the other daemon")
            finally:
                context.__exit__(None, None, None)
    finally:
        other.close()
