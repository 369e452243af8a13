"""What a log line quotes beyond its traceback: an exception's message written into the line,
what a plugin or a filter logs inside an evaluation worker, and a refused reload's errors pass
the same filters as the rest of the daemon's log (content hidden by default, every secret
redacted, the new config's too)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest
from daemons import SAMPLE, chat_started, install_plugin, wait_for, write_setup

from rulekit.config import LoggingSettings
from rulekit.runtime.logs import configure_logging

TEXT = "mail me at jane.doe@shop.example, card 4111 1111 1111 1111"

PLUGIN = """\
import logging

from rulekit import hookimpl
from rulekit.actions.base import Action
from rulekit.models import StrictModel
from rulekit.runtime.logs import log


class Params(StrictModel):
    text: str


class Chatty(Action):
    name = "chatty"
    description = "logs errors that quote what it was given"
    Params = Params

    async def execute(self, params, context):
        error = ValueError(f"cannot keep {params.text!r}")
        log(logging.getLogger("rulekit.chatty"), logging.WARNING, "not kept", failure=error)
        logging.getLogger("rulekit_chatty").warning("lost %d: %s", 1, error)
        return {}


def spy(value):
    logging.getLogger("rulekit_chatty").warning("filter saw %s", value)
    return value


@hookimpl
def rulekit_register_actions(register):
    register.add(Chatty)


@hookimpl
def rulekit_template_environment(register):
    register.filter("spy", spy)
"""

CHATTY_RULES = """\
- name: Chatty
  on: {channel: online-chat, event: created}
  do:
    - chatty: {text: "{{ message.text }}"}
"""

SPY_RULES = """\
- name: Spy
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "{{ message.text | spy }}"}
"""


@pytest.fixture
def chatty_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin distribution that logs, on the path of this process, of the daemons started
    as processes and of the evaluation workers."""
    return install_plugin(tmp_path, monkeypatch, "rulekit_chatty", PLUGIN)


def _body(text: str) -> bytes:
    data = json.loads(json.dumps(SAMPLE))
    data["message"].update(text=text)
    return json.dumps(data).encode()


@pytest.mark.parametrize("content", [False, True])
def test_an_exception_a_line_quotes_keeps_its_type_and_hides_its_message(
    tmp_path, serve, chatra, chatty_plugin, log_lines, content
):
    """An exception written into the line (``log(..., failure=exc)`` as the daemon's store and
    worker errors are, or a ``%s`` argument of a plugin's own logger): without content, its
    type stays and its message is ``[hidden]``; with content, the message is logged."""
    configure_logging(LoggingSettings(content=content), log_lines)
    server = serve(write_setup(tmp_path, CHATTY_RULES, chatra=chatra))
    assert httpx.post(server.webhook_url, content=_body(TEXT)).status_code == 200
    wait_for(
        lambda: "rulekit_chatty" in log_lines.text and "not kept" in log_lines.text, timeout=60
    )
    lines = [line for line in log_lines.text.splitlines() if "not kept" in line or "lost" in line]
    assert len(lines) == 2, log_lines.text
    if content:
        assert all(line.endswith(f"cannot keep {TEXT!r}") for line in lines), lines
    else:
        assert "4111" not in log_lines.text
        assert lines[0].endswith("rulekit.chatty: not kept: ValueError: [hidden]"), lines
        assert lines[1].endswith("rulekit_chatty: lost 1: ValueError: [hidden]"), lines


def test_what_a_filter_logs_in_the_evaluation_worker_is_filtered_too(
    tmp_path, processes, chatra, chatty_plugin
):
    """A template filter logs from the evaluation worker: its line is formatted and cleaned
    as the daemon's own (email masked, secret redacted), never printed raw."""
    config = write_setup(tmp_path, SPY_RULES, chatra=chatra)
    process = processes(config).wait_ready()
    text = f"write to jane.doe@shop.example with key {chatra.secret_key}"
    assert httpx.post(process.webhook_url, content=_body(text)).status_code == 200
    wait_for(lambda: chatra.sent, timeout=60)
    wait_for(lambda: "filter saw" in process.output(), timeout=30)
    output = process.output()
    assert "jane.doe@shop.example" not in output
    assert chatra.secret_key not in output
    [line] = [line for line in output.splitlines() if "filter saw" in line]
    assert line.endswith("WARNING rulekit_chatty: filter saw write to <email> with key ***")


NEW_TOKEN = "xoxb-only-in-the-new-config-4711"


@pytest.mark.slow
def test_a_refused_reload_redacts_the_secrets_of_the_new_config(tmp_path, processes, chatra):
    """The new config adds a secret and its rules are invalid with an error quoting it: the
    refused reload's log line and the errors /healthz shows redact it, although the config in
    force (whose secrets the log's filters know) does not hold it."""
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config, "--no-watch").wait_ready()
    twice = f"- name: {NEW_TOKEN}\n  on: {{channel: online-chat, event: created}}\n  do: []\n"
    (tmp_path / "rules.d" / "rules.yaml").write_text(twice + twice)
    config.write_text(config.read_text() + f"integrations:\n  slack: {{token: {NEW_TOKEN}}}\n")
    process.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in process.output(), timeout=60)
    output = process.output()
    assert f"rule {'***'!r}" in output
    assert NEW_TOKEN not in output
    errors = httpx.get(f"{process.url}/healthz", timeout=5).json()["last_reload"]["errors"]
    assert errors and NEW_TOKEN not in json.dumps(errors)
    httpx.post(process.webhook_url, content=chat_started(1))
    wait_for(lambda: len(chatra.sent) == 1)  # the old rules stay


@pytest.mark.parametrize("content", [False, True])
def test_a_refused_body_s_key_is_told_to_the_sender_and_hidden_in_the_log(
    tmp_path, serve, log_lines, content
):
    """A body with a key twice is refused with the key named, for the sender; the log line of
    the refusal hides it unless content may be logged (a key may be a client's phone number
    or name)."""
    configure_logging(LoggingSettings(content=content), log_lines)
    server = serve(write_setup(tmp_path))
    key = "+353 1 555 0199 Jane Roe"
    body = json.dumps({"clients": {key: 1}})[:-2] + f', "{key}": 2}}}}'
    answer = httpx.post(server.webhook_url, content=body.encode())
    assert answer.status_code == 400 and key in answer.json()["error"]
    [line] = [line for line in log_lines.text.splitlines() if "webhook refused" in line]
    if content:
        assert key in line
    else:
        assert key not in log_lines.text
        assert "the body has the key '[hidden]' twice in one object" in line, line


SLACK_RULES = """\
- name: Tell Slack
  on: {channel: online-chat, event: created}
  do:
    - slack: {channel: C1, text: "{{ message.text | spy }}"}
"""


@pytest.mark.parametrize("content", [False, True])
def test_debug_level_alone_logs_no_content(
    tmp_path, processes, chatra, fake_slack, chatty_plugin, content
):
    """``level: debug`` shows more of what the daemon does, not the clients' conversations:
    without ``content: true`` a filter's line in the worker masks the email, and slack-sdk's
    debug dumps of the request and of Slack's answer (both quoting the message) are left out;
    with it, both are there."""
    extra = f"logging: {{level: debug, content: {str(content).lower()}}}\n"
    config = write_setup(tmp_path, SLACK_RULES, chatra=chatra, slack=fake_slack, extra=extra)
    process = processes(config).wait_ready()
    text = "refund to jane.doe@shop.example please"
    assert httpx.post(process.webhook_url, content=_body(text)).status_code == 200
    wait_for(lambda: fake_slack.messages(), timeout=60)
    wait_for(lambda: "filter saw" in process.output() and "slack: done" in process.output())
    process.terminate()
    output = process.output()
    assert fake_slack.token not in output
    if content:
        assert "Sending a request" in output  # slack-sdk's dump, message and all
        assert "jane.doe@shop.example" in output
    else:
        assert "Sending a request" not in output and "Received the following" not in output
        assert "jane.doe@shop.example" not in output
        [line] = [line for line in output.splitlines() if "filter saw" in line]
        assert line.endswith("WARNING rulekit_chatty: filter saw refund to <email> please")
