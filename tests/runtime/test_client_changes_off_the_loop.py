"""``update_client`` changes rulekit's record of the client in a worker thread, as the other
actions that change stored state do (``tag``, ``set``, ``assign``): while a row it must change
is locked by another session (an agent's change, a ``rulekit forget``, a person at ``psql``),
its job waits, and the daemon goes on answering. Before, its transaction ran on the event loop:
every webhook, console request and other job waited with it, up to the store's
``lock_timeout``, again at each retry (PostgreSQL, the fake Chatra)."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

RULES = """\
- name: Note new chats
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello"}
    - update_client: {notes: "wrote first"}
"""


def _server_and_schema(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema")[0]
    rest = "&".join(f"{key}={value[0]}" for key, value in query.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")), schema


def test_a_locked_client_row_holds_up_its_job_not_the_daemon(
    tmp_path, serve, chatra, postgres_url
) -> None:
    psycopg = pytest.importorskip("psycopg")
    config = write_setup(tmp_path, RULES, chatra=chatra)
    storage = f"{postgres_url}&lock_timeout=120"  # the old code held the loop this long
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
    )
    chatra.add_client("client00000001")
    chatra.hang(1.5)  # the autoreply, first of the conversation's lane, takes its time
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    store = server.daemon.store
    wait_for(lambda: store_read(store, lambda s: s.history(limit=10)))
    dsn, schema = _server_and_schema(postgres_url)
    with psycopg.connect(dsn, autocommit=False) as locker, psycopg.connect(dsn) as watcher:
        locker.execute(f'SET search_path TO "{schema}"')
        assert locker.execute("SELECT id FROM clients FOR UPDATE").fetchall()
        locked_pid = locker.info.backend_pid

        def waiting_for_the_lock() -> bool:
            rows = watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND %s = ANY(pg_blocking_pids(pid))",
                (locked_pid,),
            ).fetchall()
            return bool(rows)

        # the update_client job is waiting for the row now; the daemon is not
        wait_for(waiting_for_the_lock, timeout=60)
        assert server.call(asyncio.sleep(0, result="free"), timeout=10) == "free"
        health = httpx.get(f"{server.url}/healthz", timeout=10)
        assert health.status_code == 200
        locker.rollback()
    # the service has the change, and once the row is free, so has rulekit's record
    [(client_id, body)] = chatra.client_updates
    assert client_id == "client00000001" and "wrote first" in str(body)

    def recorded() -> bool:
        found = store_read(store, lambda s: s.get_client("online-chat", "client00000001"))
        return found is not None and found.notes == "wrote first"

    wait_for(recorded, timeout=30)


def store_read(store, query):
    with store.transaction() as state:
        return query(state)
