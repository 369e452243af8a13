"""Tracebacks in the daemon's log: without ``logging.content``, an exception's message (which
may quote a client's text, an email, a secret) is ``[hidden]``, while its type and each
frame's file and line stay for the operator."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from daemons import chat_started, install_plugin, wait_for, write_setup

from rulekit.config import LoggingSettings
from rulekit.runtime.logs import configure_logging

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
