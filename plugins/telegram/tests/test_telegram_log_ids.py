"""A Telegram event's id holds the chat's (``telegram:<chat>:<message>``), and a private
chat's id is its user's: the daemon's lines at INFO and above name events, conversations and
lanes by a short stable hash (:func:`rulekit.runtime.logs.log_id`), never by the id."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.config import LoggingSettings
from rulekit.runtime.logs import configure_logging, log_id, redact_path
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup

CHAT = 7352961048
"""A user's id, and so their private chat's: digits no timestamp or number of the log holds."""
DANA = TelegramUser(CHAT, "Dana", username="dana_q")


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """The daemon's log at INFO (as ``rulekit run`` sets it up), put back as it was after."""
    names = ["", "rulekit", "rulekit.sdk", "uvicorn", "uvicorn.error", "uvicorn.access"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    stream = io.StringIO()
    configure_logging(LoggingSettings(), stream)
    yield stream
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


def test_no_line_names_a_chat_by_its_id(tmp_path: Path, log_text: io.StringIO) -> None:
    with FakeTelegram(token="987654:bot-token-secret") as telegram:
        config = write_setup(tmp_path, telegram)
        with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
            result = CliRunner().invoke(
                cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
            )
            assert result.exit_code == 0, result.output
            updates = Updates()
            assert telegram.write(updates.message(DANA, "Hi")) == 200
            wait_for(lambda: telegram.messages(CHAT, accepted=True))
            wait_for(lambda: ": done" in log_text.getvalue())  # the reply's job, logged
    text = log_text.getvalue()
    assert " event telegram~" in text, text  # the event's line, by its hash
    assert str(CHAT) not in text, text


def test_a_log_id_is_short_stable_and_keeps_the_channel() -> None:
    assert log_id(f"telegram:{CHAT}:17") == log_id(f"telegram:{CHAT}:17")
    assert log_id(f"telegram:{CHAT}:17") != log_id(f"telegram:{CHAT}:18")
    assert log_id(f"telegram:{CHAT}:17").startswith("telegram~")
    assert len(log_id(f"telegram:{CHAT}:17")) == len("telegram~") + 12
    assert log_id(f"{CHAT}") == "~" + log_id(f"{CHAT}").removeprefix("~")
    assert str(CHAT) not in redact_path(f"/console/api/conversations/telegram:{CHAT}/messages")
    assert redact_path(f"/console/api/conversations/telegram:{CHAT}/messages").endswith("/messages")
    assert redact_path("/console/api/conversations") == "/console/api/conversations"
