"""A channel's fetching task that fails unexpectedly does not end silently: the error is logged
with its traceback, the fetcher is started again after a pause, and /healthz tells one that
keeps failing."""

from __future__ import annotations

import json
import logging
import sqlite3

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

REFUSED_FETCHED = (
    "CREATE TRIGGER refused BEFORE INSERT ON inbox WHEN NEW.delivery_key LIKE 'client:%'"
    " BEGIN SELECT RAISE(ABORT, 'refused'); END"
)


def _healthz(server) -> tuple[int, list[str]]:
    answer = httpx.get(f"{server.url}/healthz")
    return answer.status_code, answer.json()["stalled"]


def _failures(caplog) -> list[logging.LogRecord]:
    """The fetcher's failures logged so far."""
    return [
        r for r in list(caplog.records) if r.getMessage().startswith("fetching updates failed: ")
    ]


def _fetched(folder) -> list[str]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        rows = conn.execute("SELECT body FROM inbox WHERE delivery_key LIKE 'client:%'")
        return [json.loads(body)["client"]["id"] for (body,) in rows]


@pytest.mark.slow
def test_a_client_fetch_the_store_refuses_is_logged_tells_healthz_and_goes_on(
    tmp_path, serve, chatra, caplog
):
    """The database refuses the clients Chatra's fetcher hands the inbox (a trigger aborts
    their insert: not an outage, an error of the database's own). The fetching task did not
    end with only "fetching updates stopped" in the log, never to fetch a client again until
    a restart, with /healthz saying nothing: the error is logged with its traceback, the
    fetcher is started again after a pause, /healthz tells it keeps failing, and once the
    database takes them the clients are fetched again and /healthz is back to 200."""
    caplog.set_level(logging.INFO)
    config = write_setup(
        tmp_path, chatra=chatra, fetch_client=True, extra="server: {stall_after: 1s}\n"
    )
    for n in range(1, 6):
        chatra.add_client(f"client{n:08d}", name=f"Visitor {n}", email=f"v{n}@example.org")
    server = serve(config)
    wait_for(lambda: _healthz(server)[0] == 200, timeout=30)
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        conn.execute(REFUSED_FETCHED)
    for n in range(1, 5):  # each visitor's client is fetched, and refused
        assert httpx.post(server.webhook_url, content=chat_started(n)).status_code == 200
    # the fetcher fails again after a pause; on a busy machine the second failure may come
    # after stall_after has passed, so /healthz alone does not say it has been logged
    failures = wait_for(lambda: len(found := _failures(caplog)) >= 2 and found, timeout=30)
    assert failures[0].exc_info is not None
    stalled = "fetching updates for channel 'online-chat' failed for 1 s"
    wait_for(lambda: _healthz(server) == (503, [stalled]), timeout=30)
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        conn.execute("DROP TRIGGER refused")
    assert httpx.post(server.webhook_url, content=chat_started(5)).status_code == 200
    wait_for(lambda: "client00000005" in _fetched(tmp_path), timeout=60)
    wait_for(lambda: _healthz(server) == (200, []), timeout=30)
