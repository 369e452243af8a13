"""A daemon killed after a ``tag`` (``set``, ``assign``) changed the stored conversation and
before the call's outcome was recorded: the call made again after the lease finds the change
noted with it, and answers what it did, its ``updated`` event included, so the rules on that
event still run, once. Before, the repeated call found nothing left to change: no ``updated``
event, and the rules reacting to the change never ran (PostgreSQL, ``rulekit run`` killed with
SIGKILL, the fake Chatra)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

RULES = """\
- name: Tag new chats
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello"}
    - tag: {add: [vip]}
- name: Say what changed
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  if: "'vip' in changed.tags.added"
  do:
    - autoreply: {text: "now vip"}
"""


def _server_and_schema(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema")[0]
    rest = "&".join(f"{key}={value[0]}" for key, value in query.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")), schema


@pytest.mark.slow
def test_a_change_made_before_a_crash_still_emits_its_updated_event(
    tmp_path, processes, chatra, postgres_url
) -> None:
    psycopg = pytest.importorskip("psycopg")
    config = write_setup(tmp_path, RULES, chatra=chatra)
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    first = processes(config, "--job-lease", "2").wait_ready()
    chatra.hang(2)  # the greeting, first of the conversation's lane, takes its time
    assert httpx.post(first.webhook_url, content=chat_started(1)).status_code == 200
    dsn, schema = _server_and_schema(postgres_url)
    with psycopg.connect(dsn) as locker, psycopg.connect(dsn, autocommit=True) as watcher:
        locker.execute(f'SET search_path TO "{schema}"')
        watcher.execute(f'SET search_path TO "{schema}"')
        wait_for(lambda: watcher.execute("SELECT 1 FROM events").fetchall(), timeout=30)
        # the chat's event row is held: the tag's outcome, which counts the events rulekit
        # caused under it, waits; the change itself is committed on its own
        assert locker.execute("SELECT event_id FROM events FOR UPDATE").fetchall()
        pid = locker.info.backend_pid

        def tagged() -> bool:
            rows = watcher.execute("SELECT data FROM conversations").fetchall()
            return any("'vip'" in str(data) or '"vip"' in str(data) for (data,) in rows)

        def outcome_waits() -> bool:
            return bool(
                watcher.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                    (pid,),
                ).fetchall()
            )

        wait_for(tagged, timeout=30)
        wait_for(outcome_waits, timeout=30)
        first.kill()  # changed, its outcome not recorded
        locker.rollback()
        assert not watcher.execute("SELECT 1 FROM events WHERE event = 'updated'").fetchall()
    restarted = processes(config, "--job-lease", "2").wait_ready()
    wait_for(lambda: "now vip" in [m["text"] for m in chatra.sent], timeout=60)

    with psycopg.connect(dsn, autocommit=True) as watcher:
        watcher.execute(f'SET search_path TO "{schema}"')

        def settled() -> list:
            jobs = watcher.execute("SELECT action, status FROM outbox ORDER BY id").fetchall()
            return jobs if all(status == "done" for _, status in jobs) else []

        jobs = wait_for(settled, timeout=30)
        assert jobs == [("autoreply", "done"), ("tag", "done"), ("autoreply", "done")]
        updates = watcher.execute("SELECT 1 FROM events WHERE event = 'updated'").fetchall()
        assert len(updates) == 1
        [(result,)] = watcher.execute("SELECT result FROM outbox WHERE action = 'tag'").fetchall()
        assert "changed" in str(result) and "applied_change" not in str(result)
    assert [m["text"] for m in chatra.sent].count("now vip") == 1
    assert restarted.terminate() == 0
