"""A timer set by an event that is not a webhook's (one an action emitted, a console change)
wakes the timer runner as a webhook's does: the runner slept on until its next look at the
store (up to 30 s), so such a timer fired up to 30 s late."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
from daemons import wait_for, write_setup
from test_timers_daemon import started_now

RULES = """\
- name: Tag new chats
  on: {channel: online-chat, event: created}
  do:
    - tag: {add: [new]}
- name: Chase tagged chats
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  after: 1s
  do:
    - autoreply: {text: "Still there?"}
"""


def statuses(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as db:
        return [status for (status,) in db.execute("SELECT status FROM timers ORDER BY id")]


def test_a_timer_set_by_an_event_an_action_emitted_fires_when_due(tmp_path, serve, chatra):
    config = write_setup(tmp_path, RULES, chatra=chatra)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=started_now(1)).status_code == 200
    wait_for(lambda: statuses(tmp_path) != [], timeout=10)  # the tag's "updated" set it
    # due a second after it was set; the runner, idle until then, looks again after 30 s
    wait_for(lambda: statuses(tmp_path) == ["fired"], timeout=15)
    wait_for(lambda: [m["text"] for m in chatra.sent] == ["Still there?"], timeout=15)
