"""Tracebacks in the daemon's log: without ``logging.content``, an exception's message (which
may quote a client's text, an email, a secret) is ``[hidden]``, while its type and each
frame's file and line stay for the operator."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from daemons import chat_started, install_plugin, read, wait_for, write_setup

from rulekit.config import LoggingSettings
from rulekit.event import Event
from rulekit.runtime.logs import configure_logging
from rulekit.store import JobSpec

TEXT = "my card is 4111 1111 1111 1111, mail me at jane.doe@shop.example"

PLUGIN = """\
from rulekit import hookimpl
from rulekit.actions.base import Action
from rulekit.channels.base import Provider
from rulekit.errors import ChannelError
from rulekit.models import StrictModel


class Params(StrictModel):
    text: str


class Fragile(Action):
    name = "fragile"
    description = "a bug: raises, quoting what it was given"
    Params = Params

    async def execute(self, params, context):
        try:
            {}[params.text]
        except KeyError as exc:
            raise RuntimeError(f"cannot handle {params.text!r}") from exc


class FragileProvider(Provider):
    name = "fragileprovider"
    default_channel = "fragile-chat"
    description = "a bug: cannot read a body, and says what it held"

    def parse(self, body, state):
        raise RuntimeError(f"cannot read {body.decode()!r}")


class PickyProvider(Provider):
    name = "pickyprovider"
    default_channel = "picky-chat"
    description = "refuses every body, and says what it held"

    def parse(self, body, state):
        raise ChannelError(f"unsupported payload {body.decode()!r}")


@hookimpl
def rulekit_register_actions(register):
    register.add(Fragile)


@hookimpl
def rulekit_register_providers(register):
    register.add(FragileProvider)
    register.add(PickyProvider)
"""

KEY_LINE = PLUGIN.splitlines().index("            {}[params.text]") + 1
"""The plugin's line that raises the KeyError."""

RULES = """\
- name: Fragile
  on: {channel: online-chat, event: created}
  do:
    - fragile: {text: "{{ message.text }}"}
"""


@pytest.fixture
def fragile_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin distribution whose ``fragile`` action raises, on the path of this process and
    of the evaluation workers."""
    return install_plugin(tmp_path, monkeypatch, "rulekit_fragile", PLUGIN)


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("content", [False, True])
def test_an_actions_traceback_hides_its_messages_unless_content_is_allowed(
    tmp_path, serve, chatra, fragile_plugin, log_lines, content, fmt
):
    configure_logging(LoggingSettings(content=content, format=fmt), log_lines)
    server = serve(write_setup(tmp_path, RULES, chatra=chatra, dispatcher={"max_attempts": 1}))
    answer = httpx.post(server.webhook_url, content=chat_started(1, TEXT))
    assert answer.status_code == 200
    wait_for(lambda: "fragile raised" in log_lines.text)
    server.stop()
    output = log_lines.text
    # for the operator: which exceptions, where
    assert "KeyError" in output and "RuntimeError" in output
    assert "rulekit_fragile.py" in output and f", line {KEY_LINE}, in execute" in output
    assert "direct cause" in output
    if content:  # the test can fail: the messages quote the client
        assert "4111 1111" in output
    else:
        assert "4111" not in output and "jane.doe" not in output
        assert "RuntimeError: [hidden]" in output and "KeyError: [hidden]" in output


def test_a_logged_exception_group_keeps_its_members_types(log_lines):
    configure_logging(LoggingSettings(), log_lines)
    try:
        raise ExceptionGroup(f"two failures for {TEXT}", [ValueError(TEXT), TypeError(TEXT)])
    except ExceptionGroup:
        logging.getLogger("rulekit.test").exception("both failed")
    assert "4111" not in log_lines.text and "jane.doe" not in log_lines.text
    for kind in ("ExceptionGroup", "ValueError", "TypeError"):
        assert f"{kind}: [hidden]" in log_lines.text


def test_an_item_set_aside_by_a_bug_is_logged_without_its_message(
    tmp_path, serve, chatra, fragile_plugin, log_lines
):
    """A provider's bug sets the item aside; the line says so with the exception's type, its
    traceback shows where, and neither quotes the body the exception quoted."""
    configure_logging(LoggingSettings(), log_lines)
    config = write_setup(tmp_path, RULES, chatra=chatra)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            "channels:\n  fragile-chat:\n    provider: fragileprovider\n"
            "    webhook_secret: s3cr3t-fragile-0001\n",
        )
    )
    server = serve(config)
    url = f"{server.url}/webhooks/fragile-chat/s3cr3t-fragile-0001"
    assert httpx.post(url, json={"text": TEXT}).status_code == 200
    wait_for(lambda: "set aside" in log_lines.text)
    server.stop()
    output = log_lines.text
    line = next(line for line in output.splitlines() if "set aside" in line)
    assert line.split(" inbox_id=")[0].endswith("set aside: RuntimeError")
    assert "rulekit_fragile.py" in output and "RuntimeError: [hidden]" in output
    assert "4111" not in output and "jane.doe" not in output


@pytest.mark.parametrize("content", [False, True])
def test_an_item_a_provider_refuses_is_logged_without_its_message_unless_content_is_allowed(
    tmp_path, serve, chatra, fragile_plugin, log_lines, content
):
    """A provider plugin's ChannelError may quote the body: the line keeps its type, and its
    message only when content may be logged."""
    configure_logging(LoggingSettings(content=content), log_lines)
    config = write_setup(tmp_path, RULES, chatra=chatra)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            "channels:\n  picky-chat:\n    provider: pickyprovider\n"
            "    webhook_secret: s3cr3t-picky-0001\n",
        )
    )
    server = serve(config)
    url = f"{server.url}/webhooks/picky-chat/s3cr3t-picky-0001"
    assert httpx.post(url, json={"text": TEXT}).status_code == 200
    wait_for(lambda: "set aside" in log_lines.text)
    server.stop()
    line = next(line for line in log_lines.text.splitlines() if "set aside" in line)
    if content:  # the test can fail: the message quotes the body
        assert "set aside: unsupported payload" in line and "4111 1111" in line
    else:
        assert line.split(" inbox_id=")[0].endswith(
            "set aside: rulekit.errors.ChannelError: [hidden]"
        )
        assert "4111" not in log_lines.text and "jane.doe" not in log_lines.text


def _stored_errors(folder: Path) -> list[str]:
    """Every error rulekit stored about jobs: their attempts' and their events' own."""
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        attempts = conn.execute("SELECT error FROM attempts WHERE error IS NOT NULL").fetchall()
        jobs = conn.execute("SELECT last_error FROM outbox WHERE last_error IS NOT NULL")
        return [row[0] for row in attempts + jobs.fetchall()]


def test_an_actions_bug_is_stored_naming_its_type_not_quoting_its_message(
    tmp_path, serve, chatra, fragile_plugin
):
    """An action's bug is retried and dead-lettered with an error naming the exception: the
    error is stored and shown (rulekit why, rulekit retry, the console's dead letters), and a
    bug's message may quote what the action was given (its traceback goes to the log)."""
    server = serve(write_setup(tmp_path, RULES, chatra=chatra, dispatcher={"max_attempts": 2}))
    assert httpx.post(server.webhook_url, content=chat_started(1, TEXT)).status_code == 200
    wait_for(lambda: read(tmp_path, lambda state: state.jobs(status="dead")), timeout=30)
    errors = _stored_errors(tmp_path)
    assert errors and all(error.startswith("RuntimeError") for error in errors)
    assert not any("4111" in error or "jane.doe" in error for error in errors)


def test_a_job_whose_data_no_longer_validates_is_dead_with_where_and_why_not_its_values(
    tmp_path, serve, chatra, fragile_plugin
):
    """A job whose parameters its action no longer accepts (the action changed since it was
    planned) is dead with an error saying which parameter and why, not quoting the values
    (pydantic's message lists them: the client's text)."""
    config = write_setup(tmp_path, RULES, chatra=chatra)
    event = Event(
        id="online-chat:msg:1",
        channel="online-chat",
        event="created",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        conversation={"id": "conv-1"},
    )
    spec = JobSpec("Fragile", "fragile", {"text": [TEXT]}, "fragile", lane="conv-1")
    read(tmp_path, lambda state: state.record_event(event, inbox_id=None, trace={}, jobs=[spec]))
    serve(config)
    (dead,) = wait_for(lambda: read(tmp_path, lambda state: state.jobs(status="dead")))
    assert dead.last_error.startswith("the job's data no longer validates: text")
    assert "4111" not in dead.last_error and "jane.doe" not in dead.last_error
