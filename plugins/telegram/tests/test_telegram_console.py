"""An agent answers a Telegram user from the console, through a real daemon and the fake Bot
API: what Telegram would not take whole is refused to the agent, never cut on the way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup
from telegram_samples import ANN

TOKEN = "anna-telegram-console-token"
CONVERSATION = f"telegram%3A{ANN.id}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, FakeTelegram]]:
    with FakeTelegram(token="987654:bot-token-secret") as telegram:
        config = write_setup(tmp_path, telegram)
        digest = hashlib.sha256(TOKEN.encode()).hexdigest()
        with config.open("a") as file:
            file.write(
                "agents:\n"
                "  - email: anna@example.com\n"
                "    name: Anna\n"
                "    groups: [support]\n"
                "    channels: [telegram]\n"
                f"    token_sha256: {digest}\n"
            )
        (tmp_path / "rules.d" / "rules.yaml").write_text("[]\n")
        with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
            result = CliRunner().invoke(
                cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            yield running, telegram


def test_a_reply_longer_than_telegram_takes_is_refused_not_cut(
    server: tuple[Server, FakeTelegram],
) -> None:
    """Telegram takes 4,096 UTF-16 code units in a message: a longer reply (under the
    console's own 5,000 characters) would reach the user cut, the agent told it was sent."""
    running, telegram = server
    assert telegram.write(Updates().message(ANN, "Hi")) == 200
    headers = {"Authorization": f"Bearer {TOKEN}"}
    endpoint = f"{running.url}/console/api/conversations/{CONVERSATION}/messages"
    wait_for(lambda: httpx.get(endpoint.removesuffix("/messages"), headers=headers).is_success)
    for text in ("x" * 4097, "😀" * 2049):
        refused = httpx.post(endpoint, json={"text": text}, headers=headers)
        assert refused.status_code == 400, refused.text
        assert "at most 4096" in refused.json()["error"]
    fits = httpx.post(endpoint, json={"text": "😀" * 2048}, headers=headers)
    assert fits.status_code == 202, fits.text
    wait_for(lambda: telegram.messages(ANN.id, accepted=True))
    assert [m.text for m in telegram.messages(ANN.id)] == ["😀" * 2048]


def test_a_reply_into_a_closed_chat_leaves_it_closed(server: tuple[Server, FakeTelegram]) -> None:
    """A Telegram conversation closes and opens with the user's own activity: an agent's
    reply does not open it (nothing would close it again while the user stays silent)."""
    running, telegram = server
    updates = Updates()
    assert telegram.write(updates.message(ANN, "Hi")) == 200
    assert telegram.write(updates.message(ANN, "/stop")) == 200
    headers = {"Authorization": f"Bearer {TOKEN}"}
    view = f"{running.url}/console/api/conversations/{CONVERSATION}"

    def status() -> str:
        answer = httpx.get(view, headers=headers)
        return str(answer.json()["conversation"]["status"]) if answer.is_success else ""

    wait_for(lambda: status() == "closed")
    sent = httpx.post(f"{view}/messages", json={"text": "Still there?"}, headers=headers)
    assert sent.status_code == 202, sent.text
    wait_for(lambda: telegram.messages(ANN.id, accepted=True))
    assert status() == "closed"
