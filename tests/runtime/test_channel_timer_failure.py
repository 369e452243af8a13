"""A channel's own timer whose code raises ends as ``error`` naming the exception, not quoting
its message (which may hold the client's data: the timer's reason is stored and shown by
``rulekit why`` and the console); the traceback goes to the log, its messages hidden unless
content may be logged, and the daemon's other work goes on."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest
from daemons import install_plugin, wait_for, write_setup

from rulekit.config import LoggingSettings
from rulekit.runtime.logs import configure_logging

TEXT = "my card is 4111 1111 1111 1111"
SECRET = "web-secret-0123456789"

PLUGIN = """\
from rulekit import hookimpl
from rulekit.channels.base import ChannelTimer
from rulekit.channels.webhook import WebhookProvider


class Closing(WebhookProvider):
    name = "closing"
    description = "a webhook channel whose idle timer has a bug quoting the client's text"

    def channel_timers(self, event):
        return [ChannelTimer("close_after", event.conversation.id, event.occurred_at)]

    def timer_due(self, timer, state):
        raise RuntimeError("cannot close the chat " + timer.conversation_id + " that said " + TEXT)


TEXT = @TEXT@


@hookimpl
def rulekit_register_providers(register):
    register.add(Closing)
""".replace("@TEXT@", repr(TEXT))


@pytest.fixture
def closing_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_plugin(tmp_path, monkeypatch, "rulekit_closing", PLUGIN)


def test_a_channel_timer_that_raises_is_an_error_naming_the_exception_only(
    tmp_path,
    serve,
    closing_plugin,
    log_lines,
) -> None:
    configure_logging(LoggingSettings(), log_lines)
    config = write_setup(tmp_path)
    config.write_text(
        config.read_text().replace(
            "channels:\n", f"channels:\n  web: {{provider: closing, webhook_secret: {SECRET}}}\n"
        )
    )
    server = serve(config)
    event = {
        "id": "e1",
        "event": "created",
        "conversation": {"id": "web:c1"},
        "message": {"text": TEXT},
    }
    answer = httpx.post(f"{server.url}/webhooks/web/{SECRET}", content=json.dumps(event))
    assert answer.status_code == 200, answer.text

    def reasons() -> list[tuple[str, str]]:
        with sqlite3.connect(tmp_path / "rulekit.sqlite3") as db:
            return db.execute("SELECT status, reason FROM timers").fetchall()

    wait_for(lambda: [status for status, _ in reasons()] == ["error"])
    assert reasons() == [("error", "web: RuntimeError")]
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # the runner went on
    server.stop()
    output = log_lines.text
    assert "channel timer of 'web'" in output and "rulekit_closing.py" in output
    assert "4111" not in output and "RuntimeError: [hidden]" in output
