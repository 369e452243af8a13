"""Event ids through a real daemon: each distinct update is its own event, a redelivered one
is the same event (the audit keeps one event per id, and drops a repeat unrun)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup
from telegram_samples import ANN

RULES = """\
- name: Edited
  on: {channel: telegram, event: message}
  if: message.edited
  do: [{autoreply: {text: "Edited: {{ message.text }}"}}]
- name: Renamed
  on: {channel: telegram, event: client_updated}
  do: [{autoreply: {text: "Now {{ client.name }}"}}]
"""


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


@pytest.fixture
def server(tmp_path: Path, telegram: FakeTelegram) -> Iterator[Server]:
    config = write_setup(tmp_path, telegram)
    (tmp_path / "rules.d" / "rules.yaml").write_text(RULES)
    with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
        result = CliRunner().invoke(
            cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
        )
        assert result.exit_code == 0, result.output
        yield running


def recorded(server: Server) -> list[str]:
    with server.daemon.store.transaction() as state:
        return [r.event_id for r in state.history(channel="telegram", limit=50)]


def settled(server: Server) -> bool:
    with server.daemon.store.transaction() as state:
        return not state.jobs(status="pending")


def replies(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.text for m in telegram.messages(chat, accepted=True)]


def test_two_edits_of_a_message_in_one_second_are_two_events(
    server: Server, telegram: FakeTelegram
) -> None:
    updates = Updates()
    first = updates.message(ANN, "helo")
    one = updates.edit(first, "hello")
    two = updates.edit(first, "hello!")
    # Telegram's edit_date counts whole seconds: both edits were made in the same one
    two["edited_message"]["edit_date"] = one["edited_message"]["edit_date"]
    for update in (first, one, two):
        assert telegram.write(update) == 200
    wait_for(lambda: len(replies(telegram, 111)) == 2)
    assert telegram.deliver(two) == 200  # a retried delivery stays one event
    wait_for(lambda: len(recorded(server)) == 3 and settled(server))
    assert replies(telegram, 111) == ["Edited: hello", "Edited: hello!"]


def test_an_update_id_numbered_anew_is_another_client_updated(
    server: Server, telegram: FakeTelegram
) -> None:
    updates = Updates()
    bodies = [updates.message(TelegramUser(111, name), "hi") for name in ("Ann", "Anna", "Ann")]
    # a week without updates: Telegram numbers them anew, at random, here as the one
    # that carried the first change
    bodies[2]["update_id"] = bodies[1]["update_id"]
    for body in bodies:
        assert telegram.write(body) == 200
    wait_for(lambda: len(replies(telegram, 111)) == 2)
    wait_for(lambda: settled(server))
    assert replies(telegram, 111) == ["Now Anna", "Now Ann"]
