"""The daemon's retention purge and SQLite's files: what it deleted leaves the database file
and its write-ahead log, not only the tables (as after ``rulekit forget``)."""

from __future__ import annotations

import httpx
import pytest
from daemons import wait_for, write_setup
from privacy_scenario import CLIENT, NAME, webhook
from test_forget_every_form import sqlite_bytes

import rulekit.server.daemon

TEXT = "my passport number is X1234567 mrktext"
RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello, you wrote: {{ message.text }}"}
"""


@pytest.mark.slow
def test_the_daemon_s_purge_leaves_no_copy_in_the_sqlite_files(
    tmp_path, serve, chatra, monkeypatch
):
    monkeypatch.setattr(rulekit.server.daemon, "RETENTION_INTERVAL", 0.5)
    config = write_setup(
        tmp_path, RULES, chatra=chatra, extra="retention: {events: 1s, payloads: 1s}\n"
    )
    server = serve(config)
    assert (
        httpx.post(server.webhook_url, content=webhook(CLIENT, NAME, "m1", TEXT)).status_code == 200
    )
    wait_for(lambda: len(chatra.sent) == 1)
    assert "mrktext" in sqlite_bytes(tmp_path)  # the test can fail

    def purged() -> bool:
        with server.daemon.store.transaction() as state:
            return not state.history(limit=10) and not state.inbox_items()

    wait_for(purged, timeout=20)
    # the daemon still runs, its connections open; the client's record is not subject to
    # retention, their message is
    wait_for(lambda: "mrktext" not in sqlite_bytes(tmp_path), timeout=10)
