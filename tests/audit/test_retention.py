"""Retention: ``purge`` with the config's durations, and ``rulekit db purge``."""

from __future__ import annotations

import sqlite3
from datetime import timedelta

from audit_site import T0, write

from rulekit.audit.retention import purge
from rulekit.config import RetentionSettings
from rulekit.store.sqlite import SQLiteStore


def test_purge_by_retention_settings(site):
    settings = RetentionSettings(events="30d", payloads="1d")
    store = SQLiteStore(site.database)
    try:
        # two days later: payloads go, events stay
        early = purge(store, settings, T0 + timedelta(days=2))
        # forty days later: finished events go with their jobs and attempts; Bob's stays
        # because one of his jobs is still pending
        late = purge(store, settings, T0 + timedelta(days=40))
    finally:
        store.close()
    assert early == {"events": 0, "jobs": 0, "attempts": 0, "timers": 0, "inbox": 0, "payloads": 3}
    assert late == {"events": 2, "jobs": 2, "attempts": 3, "timers": 0, "inbox": 3, "payloads": 0}
    assert site.sql("SELECT event_id FROM events") == [("chatra:message:bob-1",)]
    assert site.sql("SELECT count(*) FROM attempts") == [(1,)]
    assert site.sql("SELECT count(*) FROM inbox") == [(0,)]


def test_db_purge_command_uses_the_config(site):
    # everything was recorded in 2024: with the default retention (90d) all finished work goes
    result = site.run("db", "purge")
    assert result.exit_code == 0, result.output
    assert "retention: events 90d, payloads 30d" in result.output
    assert "       2  audit records deleted" in result.output
    assert site.sql("SELECT count(*) FROM events") == [(1,)]


def test_db_purge_keeps_recent_records(site):
    config = site.config.read_text() + "retention: {events: 100000d, payloads: 100000d}\n"
    write(site.config, config)
    result = site.run("db", "purge", "--format", "json")
    assert '"events": 0' in result.output and '"payloads": 0' in result.output
    assert site.sql("SELECT count(*) FROM events") == [(3,)]


def test_purge_pauses_between_its_transactions_so_webhooks_get_the_store(site):
    settings = RetentionSettings(events="30d", payloads="1d")
    pauses: list[float] = []
    store = SQLiteStore(site.database)
    try:
        removed = purge(store, settings, T0 + timedelta(days=40), batch=1, pause=pauses.append)
        paused = len(pauses)
        again = purge(store, settings, T0 + timedelta(days=40), pause=pauses.append)
    finally:
        store.close()
    assert removed["events"] == 2 and removed["inbox"] == 3
    # one item per transaction: a pause after each but the last, as long as it took
    assert paused >= 2
    assert all(0 <= pause <= 1.0 for pause in pauses)
    assert again["events"] == 0
    assert len(pauses) == paused  # one transaction, nothing to wait for after it


def test_db_purge_leaves_no_copy_of_what_it_deleted_in_the_write_ahead_log(site):
    """With a daemon's connection open, the database file and its write-ahead log kept the
    purged records (the log is checkpointed into the file only after enough writes, and a
    frame once written stays in the log until it is reused): the purge truncates the log."""
    from audit_site import REFUND_TEXT

    def files() -> bytes:
        folder, name = site.database.parent, site.database.name
        return b"".join(path.read_bytes() for path in sorted(folder.glob(name + "*")))

    daemon = sqlite3.connect(site.database)  # a running daemon's connection
    try:
        daemon.execute("SELECT count(*) FROM events").fetchall()
        assert REFUND_TEXT.encode() in files()  # the test can fail
        result = site.run("db", "purge")
        assert result.exit_code == 0, result.output
        assert "2  audit records deleted" in result.stdout and result.stderr == ""
        assert REFUND_TEXT.encode() not in files()
    finally:
        daemon.close()
