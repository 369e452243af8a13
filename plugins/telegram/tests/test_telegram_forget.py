"""``rulekit forget`` of a Telegram user, through a real daemon: their name, username, messages,
captions and the topic of their chat they wrote in leave every byte of the store, and the
pseudonymous user id alone stays."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup
from telegram_samples import SECRET

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


@pytest.mark.slow
def test_forget_leaves_the_updates_of_others_whose_numbers_equal_the_user_s_id(
    tmp_path: Path,
) -> None:
    """A Telegram user's id is a number, and so are many fields of every update (its date,
    a file's size, a photo's width): an update of another user whose date was the forgotten
    user's id, to the second, lost its body (a set-aside one could no longer be retried). An
    update that names the user (a message of theirs forwarded, their id in a reply) is still
    erased."""
    updates = Updates()
    ann = TelegramUser(updates.date + 2, "Annmrk")  # an id of ten digits, as a date is
    boris = TelegramUser(222, "Boris")
    with FakeTelegram(token="987654:bot-token-secret") as telegram:
        config = write_setup(tmp_path, telegram)
        with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
            result = CliRunner().invoke(
                cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            own = updates.message(ann, "mine")
            other = updates.message(boris, "dated as Ann's id")
            assert other["message"]["date"] == ann.id
            other["message"]["photo"] = [{"file_id": "x", "width": ann.id, "height": 1}]
            forwarded = updates.message(boris, "look what she wrote")
            forwarded["message"]["forward_from"] = ann.as_json()
            bodies = {}
            for name, update in (("own", own), ("other", other), ("forwarded", forwarded)):
                answer = httpx.post(
                    f"{running.url}/webhooks/telegram/{SECRET}",
                    content=json.dumps(update, separators=(",", ":")),  # as Telegram writes
                    headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                )
                assert answer.status_code == 200, answer.text
                bodies[name] = answer.json()["id"]

            def settled() -> bool:
                with running.daemon.store.transaction() as state:
                    items = state.inbox_items()
                    return len(items) == 3 and all(i.status == "done" for i in items)

            wait_for(settled)
            result = CliRunner().invoke(
                cli, ["forget", str(ann.id), "--yes", "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            with running.daemon.store.transaction() as state:
                kept = {item.id: item.body for item in state.inbox_items()}
            assert kept[bodies["own"]] == b""
            assert kept[bodies["forwarded"]] == b""
            assert json.loads(kept[bodies["other"]]) == other
