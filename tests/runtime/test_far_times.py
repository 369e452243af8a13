"""Times at the edge of what ``datetime`` holds, from every channel, against a real daemon.

A webhook may say a message was written in the year 9999 (or 1). Valid JSON, valid dates; but a
timed rule's timer (``after: 5m``), a cooldown or Telegram's idle deadline added to such a time
is past the end of ``datetime``: the item was set aside with an ``OverflowError``, or killed
the evaluation worker, and Telegram's next update from that user failed alike. Such a time is
unknown, like a missing one: every item is processed, and so is what comes after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daemons import SECRET, Server, write_setup
from hostile import SAMPLES, Inbox, fresh

from rulekit.server.daemon import Daemon
from rulekit.testing.telegram_updates import TelegramUser, Updates

TELEGRAM_SECRET = "telegram-secret-0123456789"
WEB_SECRET = "web-secret-0123456789"
RULES = """\
- name: Greet
  on: {channel: [online-chat, telegram, web], event: [created, message, reopened]}
  cooldown: 1h
  do:
    - autoreply: {text: "Hello"}
- name: Nudge
  on: {channel: [online-chat, telegram, web], event: [created, message, reopened]}
  after: 5m
  do:
    - autoreply: {text: "Still there?"}
"""
FAR = [253402300799, -62135596800, 10**11]
"""Unix seconds: the last second of the year 9999, the first of the year 1, the year 5138."""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Server, Inbox]]:
    config = write_setup(tmp_path, RULES)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            "channels:\n"
            f"  telegram: {{provider: telegram-bot, webhook_secret: {TELEGRAM_SECRET}}}\n"
            f"  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n",
        )
    )
    server = Server(Daemon(config, watch=False)).start()
    try:
        yield server, Inbox(tmp_path / "rulekit.sqlite3")
    finally:
        server.stop()


def _chatra(n: int, seconds: int) -> list[bytes]:
    """A chat started at a far time (its message's and visit's times, as a number and as ISO
    text), then the visitor's next message."""
    iso = "9999-12-31T23:59:59Z" if seconds > 0 else "0001-01-01T00:00:00Z"
    bodies = []
    for k, when in enumerate([seconds * 1000, iso]):
        started = fresh(SAMPLES["chat_started_anonymous.json"], n * 10 + k)
        started["message"]["createdAt"] = when
        started["client"]["lastVisit"] = {"startedAt": when}
        follow_up = fresh(SAMPLES["chat_fragment_client_message.json"], n * 10 + k)
        follow_up["client"]["id"] = started["client"]["id"]
        bodies += [json.dumps(started).encode(), json.dumps(follow_up).encode()]
    return bodies


def _telegram(n: int, seconds: int) -> list[bytes]:
    """A user's message dated at a far time, then their next one."""
    updates = Updates(first_update_id=1000 * n)
    user = TelegramUser(700 + n)
    far = updates.message(user, "first")
    far["message"]["date"] = seconds
    return [json.dumps(far).encode(), json.dumps(updates.message(user, "next")).encode()]


def _web(n: int, seconds: int) -> list[bytes]:
    iso = "9999-12-31T23:59:59Z" if seconds > 0 else "0001-01-01T00:00:00Z"
    event = {
        "id": f"far-{n}",
        "event": "message",
        "occurred_at": iso,
        "conversation": {"id": f"web:far-{n}", "last_client_message_at": iso},
        "client": {"id": f"far-{n}", "last_visit": iso},
        "message": {"id": f"far-{n}", "text": "hi", "created_at": iso},
    }
    return [json.dumps(event).encode()]


@pytest.mark.parametrize("seconds", FAR, ids=["year-9999", "year-1", "year-5138"])
def test_far_times_from_every_channel_are_processed_and_so_is_what_follows(daemon, seconds):
    server, inbox = daemon
    channels = [
        (f"/webhooks/online-chat/{SECRET}", {}, _chatra),
        (
            f"/webhooks/telegram/{TELEGRAM_SECRET}",
            {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET},
            _telegram,
        ),
        (f"/webhooks/web/{WEB_SECRET}", {}, _web),
    ]
    ids = []
    for n, (path, headers, bodies) in enumerate(channels, start=1):
        for body in bodies(n, seconds):
            answer = httpx.post(server.url + path, content=body, headers=headers, timeout=30)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["id"])
    settled = inbox.settle(ids)
    assert all(settled[i] == ("done", None) for i in ids), settled
    assert all(inbox.events(i) for i in ids)  # each item meant an event
