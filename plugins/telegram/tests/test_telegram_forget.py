"""``rulekit forget`` of a Telegram user, through a real daemon: their name, username, messages,
captions and the topic of their chat they wrote in leave every byte of the store, and the
pseudonymous user id alone stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup

USER = TelegramUser(
    735512, "Quillamrkfirst", "Zedmrklast", username="mrkuser_q", language_code="en"
)
TOKENS = ("mrkfirst", "mrklast", "mrkuser", "mrktext", "mrkcaption")


def files(folder: Path) -> str:
    blob = b"".join(p.read_bytes() for p in sorted(folder.glob("rulekit.sqlite3*")) if p.is_file())
    return blob.decode("utf-8", errors="replace").casefold()


@pytest.mark.slow
def test_forget_erases_a_telegram_user_from_every_byte_of_the_store(tmp_path: Path) -> None:
    with FakeTelegram(token="987654:bot-token-secret") as telegram:
        config = write_setup(tmp_path, telegram)
        with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
            result = CliRunner().invoke(
                cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            updates = Updates()
            assert telegram.write(updates.message(USER, "Hello mrktext café")) == 200
            photo = updates.message(USER, kind="photo", caption="see mrkcaption", topic=4242)
            assert telegram.write(photo) == 200
            wait_for(lambda: len(telegram.messages(USER.id, accepted=True)) == 2)

            def settled() -> bool:
                with running.daemon.store.transaction() as state:
                    return not state.jobs(status="pending")

            wait_for(settled)
            before = files(tmp_path)
            assert all(token in before for token in TOKENS)  # the test can fail
            result = CliRunner().invoke(
                cli, ["forget", str(USER.id), "--yes", "--format", "json", "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            erased = json.loads(result.stdout)["erased"]
            assert erased["clients"] == 1 and erased["events"] >= 2
            after = files(tmp_path)
            assert [token for token in TOKENS if token in after] == []
