"""The commands that only read the store (``why``, ``history``, ``stats``, ``replay``, and the
listings of ``retry`` and ``requeue``) never take SQLite's write lock: a daemon in the middle
of a write never waits for them (a ``replay`` of 10,000 events, or a ``history`` over a large
store, held every webhook's acknowledgement for as long as it ran), and they answer while the
daemon writes."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import pytest
from audit_site import CONFIG, RULES, Site, write


@pytest.fixture
def writing(site: Site) -> Iterator[sqlite3.Connection]:
    """The store's write lock held by another connection (a daemon writing an event) for as
    long as the test runs; the commands wait at most a fifth of a second for it."""
    site.config.write_text(
        CONFIG.replace("audit.sqlite3", "audit.sqlite3?busy_timeout=0.2"), encoding="utf-8"
    )
    writer = sqlite3.connect(site.database, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM events WHERE event_id = 'chatra:message:bob-1'")
    try:
        yield writer
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_history_reads_while_a_writer_holds_the_lock(site: Site, writing: sqlite3.Connection):
    result = site.run("history", "--format", "json")
    assert result.exit_code == 0, result.output
    ids = [line["event_id"] for line in json.loads(result.output)["events"]]
    # the writer's change is not committed: the command reads the store as it was
    assert ids == ["chatra:message:bob-1", "chatra:message:jane-2", "chatra:created:jane-1"]


def test_why_reads_while_a_writer_holds_the_lock(site: Site, writing: sqlite3.Connection):
    result = site.run("why", "chatra:message:bob-1")
    assert result.exit_code == 0, result.output
    assert "event chatra:message:bob-1" in result.output


def test_stats_reads_while_a_writer_holds_the_lock(site: Site, writing: sqlite3.Connection):
    result = site.run("stats", "--format", "json")
    assert result.exit_code == 0, result.output
    rules = {row["rule"]: row["matched"] for row in json.loads(result.output)["rules"]}
    assert rules["Refunds to Slack"] == 2


def test_replay_reads_while_a_writer_holds_the_lock(site: Site, writing: sqlite3.Connection):
    candidate = write(site.root / "candidate" / "rules.yaml", RULES)
    result = site.run("replay", "--rules", str(candidate.parent), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["summary"]["events"] == 3


def test_the_writer_commits_while_a_command_reads(site: Site):
    """The other way round: the daemon's write goes through while a command's read is open
    (the store as the command opened it, read the way it reads)."""
    from rulekit.audit.stores import open_recorded
    from rulekit.loading import open_config

    _, config = open_config(str(site.config))
    store = open_recorded(config, writes=False)
    try:
        with store.reading() as state:
            assert len(state.history(since=None, limit=10)) == 3
            writer = sqlite3.connect(site.database, isolation_level=None, timeout=0.2)
            try:
                writer.execute("DELETE FROM events WHERE event_id = 'chatra:message:bob-1'")
            finally:
                writer.close()
            assert len(state.history(since=None, limit=10)) == 3  # its snapshot
    finally:
        store.close()
    assert site.sql("SELECT count(*) FROM events") == [(2,)]


@pytest.mark.parametrize(
    ("command", "listing"), [("retry", "dead_letters"), ("requeue", "set_aside")]
)
def test_listings_read_while_a_writer_holds_the_lock(
    site: Site, writing: sqlite3.Connection, command: str, listing: str
):
    result = site.run(command, "--format", "json")
    assert result.exit_code == 0, result.output
    assert listing in json.loads(result.output)
