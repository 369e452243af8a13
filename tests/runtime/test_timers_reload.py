"""Pending timers across a reload, in a running daemon with the test's clock: a timer whose rule
a reload removed, or whose ``on:`` no longer takes its triggering event, ends as ``gone`` when
due and runs nothing; the others fire once, at the due time they were set with."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from daemons import chat_fragment, chat_started, wait_for, write_setup
from test_timers_replay import at

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)  # a Monday
BEFORE = """\
- name: Greeted late
  on: {channel: online-chat, event: [created, message]}
  after: 5m
  restart: true
  do:
    - autoreply: {text: "late"}
- name: Removed
  on: {channel: online-chat, event: created}
  after: 5m
  do:
    - autoreply: {text: "removed"}
"""
AFTER = """\
- name: Greeted late
  on: {channel: online-chat, event: message}
  after: 1m
  do:
    - autoreply: {text: "late, reloaded"}
"""


def timers(folder: Path) -> dict[tuple[str, str], tuple[str, str | None]]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as db:
        rows = db.execute("SELECT rule, conversation_id, status, reason FROM timers").fetchall()
    return {(rule, conv[-2:]): (status, reason) for rule, conv, status, reason in rows}


def test_timers_of_a_rule_removed_or_narrowed_by_a_reload_end_as_gone(tmp_path, serve, chatra):
    config = write_setup(tmp_path, BEFORE, chatra=chatra)
    clock = [T0]
    server = serve(config, clock=lambda: clock[0])
    # both rules set a timer for each chat; visitor 2's message restarts theirs
    started = [at(chat_started(n), T0) for n in (1, 2)]
    message = json.loads(chat_fragment(2, 1, "still there?"))
    message["messages"][0]["createdAt"] = int(T0.timestamp() * 1000)
    for body in (*started, json.dumps(message).encode()):
        assert httpx.post(server.webhook_url, content=body).status_code == 200
    wait_for(lambda: len(timers(tmp_path)) == 4)
    (tmp_path / "rules.d" / "rules.yaml").write_text(AFTER)
    assert server.call(server.daemon.reload("test")) is True
    clock[0] = T0 + timedelta(minutes=6)
    server.daemon.timers.wake()
    wait_for(lambda: all(s != "pending" for s, _ in timers(tmp_path).values()), timeout=30)
    assert timers(tmp_path) == {
        ("Greeted late", "01"): (
            "gone",
            "the rule no longer reacts to its triggering event (online-chat created)",
        ),
        ("Removed", "01"): ("gone", "the rule is no longer a timed rule"),
        ("Removed", "02"): ("gone", "the rule is no longer a timed rule"),
        ("Greeted late", "02"): ("fired", None),
    }
    wait_for(lambda: len(chatra.sent) == 1, timeout=30)
    assert [m["text"] for m in chatra.sent] == ["late, reloaded"]
