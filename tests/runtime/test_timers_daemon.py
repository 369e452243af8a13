"""Timers in the running daemon: set with the event, fired once through the outbox, cancelled by
a reply, surviving kill -9, dropped when too late, and fired by exactly one of three daemons."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from daemons import SAMPLE, chat_started, wait_for, write_setup

from rulekit.event import Event

TIMED = """\
- name: Nobody answered
  on: {channel: online-chat, event: created}
  after: AFTER
  max_late: MAX_LATE
  cancel_on: agent_replied
  do:
    - autoreply: {text: "Sorry for the wait, {{ client.display_name }}"}
"""
REPLY = json.loads(
    (
        Path(__file__).parents[2]
        / "examples"
        / "chatra"
        / "chat_fragment_agent_reply_from_app.json"
    ).read_text()
)


def rules(max_late: str = "1h", after: str = "2s") -> str:
    return TIMED.replace("MAX_LATE", max_late).replace("AFTER", after)


def started_now(n: int) -> bytes:
    """chat_started(n), written now (the timer counts from the message's time)."""
    body = json.loads(chat_started(n))
    body["message"]["createdAt"] = int(time.time() * 1000)
    return json.dumps(body).encode()


def agent_reply(n: int) -> bytes:
    body = json.loads(json.dumps(REPLY))
    body["client"] = {**SAMPLE["client"], "id": f"client{n:08d}", "chatId": f"chat{n:08d}"}
    body["messages"][0]["id"] = f"reply{n:08d}"
    body["messages"][0]["createdAt"] = int(time.time() * 1000)
    return json.dumps(body).encode()


def timers(folder: Path) -> list[dict]:
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute("SELECT * FROM timers ORDER BY id")]
    finally:
        conn.close()


def replies(chatra) -> list[str]:
    return [message["clientId"] for message in chatra.sent]


@pytest.mark.slow
def test_a_timer_survives_kill_9_and_fires_once(tmp_path, processes, chatra):
    # long enough that the daemon is killed before it is due, on a busy machine too
    config = write_setup(tmp_path, rules(after="8s"), chatra=chatra)
    process = processes(config).wait_ready()
    assert httpx.post(process.webhook_url, content=started_now(1)).status_code == 200
    wait_for(lambda: timers(tmp_path))  # recorded with its event
    process.kill()
    (timer,) = timers(tmp_path)
    assert timer["status"] == "pending" and chatra.sent == []
    due = datetime.fromisoformat(timer["due"])
    wait_for(lambda: datetime.now(UTC) > due, timeout=20)  # it falls due while nobody runs
    processes(config).wait_ready()
    wait_for(lambda: timers(tmp_path)[0]["status"] == "fired", timeout=30)
    wait_for(lambda: replies(chatra) == ["client00000001"], timeout=30)
    (fired,) = timers(tmp_path)
    assert fired["by_event"] == f"timer:{fired['id']}"
    assert datetime.fromisoformat(fired["finished_at"]) > due
    # the fired plan is an event of its own, with its trace and its job
    from rulekit.store.sqlite import SQLiteStore

    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        with store.transaction() as state:
            record = state.get_event(fired["by_event"])
            assert record is not None and record.trace["timer"]["outcome"] == "fired"

        def statuses() -> list[str]:
            with store.transaction() as state:
                return [job.status for job in state.jobs(event_id=fired["by_event"])]

        # the fake hears the call before the daemon records its answer
        wait_for(lambda: statuses() == ["done"], timeout=30)
    finally:
        store.close()
    assert replies(chatra) == ["client00000001"]  # once

    # why and history show it
    from click.testing import CliRunner

    from rulekit.cli.main import cli

    runner = CliRunner()
    why = runner.invoke(cli, ["why", fired["trigger_event_id"], "--config", str(config)]).output
    assert f"set timer #{fired['id']} of 'Nobody answered'" in why
    assert "fired at " in why and f"recorded as event timer:{fired['id']}" in why
    why = runner.invoke(cli, ["why", f"timer:{fired['id']}", "--config", str(config)]).output
    assert "⏱ timer of 'Nobody answered' due " in why and ": fired (" in why
    history = runner.invoke(cli, ["history", "--config", str(config)]).output
    assert "timers: set Nobody answered" in history
    assert "timers: Nobody answered: fired" in history


def test_a_reply_cancels_the_timer(tmp_path, serve, chatra):
    config = write_setup(tmp_path, rules(after="60s"), chatra=chatra)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=started_now(2)).status_code == 200
    wait_for(lambda: timers(tmp_path))
    assert httpx.post(server.webhook_url, content=agent_reply(2)).status_code == 200
    wait_for(lambda: timers(tmp_path)[0]["status"] != "pending", timeout=10)
    (timer,) = timers(tmp_path)
    assert timer["status"] == "cancelled", timer
    assert timer["by_event"].startswith("online-chat:")
    assert replies(chatra) == []


@pytest.mark.slow
def test_an_overdue_timer_is_dropped_and_recorded(tmp_path, processes, chatra):
    config = write_setup(tmp_path, rules(max_late="1s", after="8s"), chatra=chatra)
    process = processes(config).wait_ready()
    assert httpx.post(process.webhook_url, content=started_now(3)).status_code == 200
    wait_for(lambda: timers(tmp_path))
    process.kill()
    assert timers(tmp_path)[0]["status"] == "pending"
    due = datetime.fromisoformat(timers(tmp_path)[0]["due"])
    wait_for(lambda: datetime.now(UTC) > due + timedelta(seconds=1.5), timeout=20)
    processes(config).wait_ready()
    wait_for(lambda: timers(tmp_path)[0]["status"] != "pending", timeout=30)
    (timer,) = timers(tmp_path)
    assert timer["status"] == "dropped"
    assert "over max_late 1s" in timer["reason"]
    assert replies(chatra) == []


def test_three_daemons_fire_each_timer_exactly_once(tmp_path, processes, chatra, postgres_url):
    from rulekit.store.postgres import PostgresStore

    config = write_setup(tmp_path, rules(), chatra=chatra)
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    store = PostgresStore(postgres_url)
    count = 30
    past = datetime.now(UTC) - timedelta(seconds=5)
    try:
        with store.transaction() as state:
            for n in range(count):
                event = Event(
                    id=f"trigger{n}",
                    channel="online-chat",
                    event="created",
                    occurred_at=past,
                    conversation={"id": f"chat{n:08d}"},
                    client={"id": f"client{n:08d}", "display_name": f"Visitor {n}"},
                )
                state.record_event(event, inbox_id=None, trace={})
                state.set_timer("Nobody answered", f"chat{n:08d}", "online-chat", past, event.id)
    finally:
        store.close()
    # all three start with every timer due: they race for them
    daemons = [processes(config) for _ in range(3)]
    for daemon in daemons:
        daemon.wait_ready()
    expected = {f"client{n:08d}" for n in range(count)}
    wait_for(lambda: set(replies(chatra)) == expected, timeout=60)
    store = PostgresStore(postgres_url)
    try:
        with store.transaction() as state:
            done = state.timers(limit=1000)
    finally:
        store.close()
    assert sorted(t.status for t in done) == ["fired"] * count
    assert sorted(replies(chatra)) == sorted(expected)  # each exactly once


def test_the_daemon_keeps_who_answered_and_when(tmp_path, serve, chatra):
    """The reply times and the last agent are kept by the daemon's own processing (webhooks
    normalized together), not only by the dry run: a timer's condition and ``assign``'s
    ``last_agent`` read them."""
    config = write_setup(tmp_path, rules(after="60s"), chatra=chatra)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=started_now(3)).status_code == 200
    assert httpx.post(server.webhook_url, content=agent_reply(3)).status_code == 200

    def stored() -> dict | None:
        conn = sqlite3.connect(tmp_path / "rulekit.sqlite3")
        try:
            row = conn.execute(
                "SELECT data FROM conversations WHERE key = ?", ("client00000003",)
            ).fetchone()
        finally:
            conn.close()
        data = json.loads(row[0]) if row else None
        return data if data and data.get("last_agent") else None

    data = wait_for(stored, timeout=10)
    assert data["last_agent"] == "anna@shop.example.com"
    assert data["last_agent_reply_at"] and data["first_agent_reply_at"]
    # the chat was started by the client's message: the client wrote, before the answer
    assert data["last_client_message_at"] < data["last_agent_reply_at"]
