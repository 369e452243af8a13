"""Albums through a real daemon: photos sent together arrive as one update each (one
``media_group_id``); the rules on ``message`` answer the album once, and every part, with its
caption, is an event."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup
from telegram_samples import ANN, SECRET

PARTS = """\
- name: Every other photo
  on: {channel: telegram, event: album_part}
  do: [{autoreply: {text: "Part: {{ message.text or '(no text)' }} of {{ message.album }}"}}]
"""


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


def set_webhook(server: Server, config: Path) -> None:
    result = CliRunner().invoke(
        cli, ["telegram", "set-webhook", server.url, "--config", str(config)]
    )
    assert result.exit_code == 0, result.output


def album(updates: Updates, group: str, *captions: str | None) -> list[dict[str, Any]]:
    """The updates of an album, one per photo, all dated as the first (sent together)."""
    parts = [updates.message(ANN, kind="photo", caption=c, album=group) for c in captions]
    for part in parts:
        part["message"]["date"] = parts[0]["message"]["date"]
    return parts


def history(server: Server) -> list[tuple[str, str, str | None]]:
    """The recorded events: name, message text, album (ordered for comparing)."""
    with server.daemon.store.transaction() as state:
        found = state.history(channel="telegram", limit=50)
    rows = [(r.event, r.data["message"]["text"] or "", r.data["message"]["album"]) for r in found]
    return sorted(rows, key=lambda row: (row[0], row[1], row[2] or ""))


def settled(server: Server) -> bool:
    with server.daemon.store.transaction() as state:
        return not state.jobs(status="pending")


def replies(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.text for m in telegram.messages(chat, accepted=True)]


def test_an_album_is_answered_once_and_each_part_is_an_event(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    config = write_setup(tmp_path, telegram)
    with (tmp_path / "rules.d" / "rules.yaml").open("a") as rules:
        rules.write(PARTS)
    with Server(Daemon(config, watch=False, clock=samples_clock)) as server:
        set_webhook(server, config)
        updates = Updates()
        assert telegram.write(updates.message(ANN, "Hi")) == 200
        for part in album(updates, "1370", "the broken part", None, "and its box"):
            assert telegram.write(part) == 200
        # a second album is answered too, once
        for part in album(updates, "1371", None, None):
            assert telegram.write(part) == 200
        wait_for(lambda: len(history(server)) == 6 and settled(server))
        assert sorted(replies(telegram, 111)) == sorted(
            [
                "Hello Ann Lee!",
                "Got photo: the broken part",
                "Part: (no text) of 1370",
                "Part: and its box of 1370",
                "Got photo: (no text)",
                "Part: (no text) of 1371",
            ]
        )
        # every photo is recorded, with its caption and its album
        assert history(server) == [
            ("album_part", "", "1370"),
            ("album_part", "", "1371"),
            ("album_part", "and its box", "1370"),
            ("created", "Hi", None),
            ("message", "", "1371"),
            ("message", "the broken part", "1370"),
        ]


def test_an_album_s_parts_read_by_two_daemons_make_one_message(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    config = write_setup(tmp_path, telegram)
    with (
        Server(Daemon(config, watch=False, clock=samples_clock)) as one,
        Server(Daemon(config, watch=False, clock=samples_clock)) as two,
    ):
        set_webhook(one, config)
        updates = Updates()
        assert telegram.write(updates.message(ANN, "Hi")) == 200
        wait_for(lambda: replies(telegram, 111))
        # Telegram posts to one address; behind it, the parts reach either daemon
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        for index, part in enumerate(album(updates, "1370", "look", "here", None, "and here")):
            server = (one, two)[index % 2]
            answer = httpx.post(
                f"{server.url}/webhooks/telegram/{SECRET}", json=part, headers=headers
            )
            assert answer.status_code == 200
        wait_for(lambda: len(history(one)) == 5 and settled(one) and settled(two))
        assert replies(telegram, 111) == ["Hello Ann Lee!", "Got photo: look"]
        assert [(event, text) for event, text, _ in history(two)] == [
            ("album_part", ""),
            ("album_part", "and here"),
            ("album_part", "here"),
            ("created", "Hi"),
            ("message", "look"),
        ]
