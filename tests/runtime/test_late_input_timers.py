"""A webhook that arrives late (its time long before it is received) sets a timer already
overdue: the daemon fires it at once, as late as that, and ``max_late`` drops it. ``rulekit
test`` fed an on-time input then the late one says the same: it fired the late input's timer
at its due time, as if the input had come on time, and said ``fired`` where the daemon
dropped it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from click.testing import CliRunner
from daemons import chat_started, wait_for, write_setup
from test_timers_daemon import replies, timers

from rulekit.cli.main import cli

RULES = """\
- name: Nobody answered
  on: {channel: online-chat, event: created}
  after: 1s
  max_late: 30s
  do:
    - autoreply: {text: "Sorry for the wait"}
"""


def started(n: int, seconds_ago: float) -> bytes:
    body = json.loads(chat_started(n))
    body["message"]["createdAt"] = int((time.time() - seconds_ago) * 1000)
    return json.dumps(body).encode()


def test_a_late_inputs_overdue_timer_is_dropped_in_the_dry_run_as_in_the_daemon(
    tmp_path: Path, serve, chatra
) -> None:
    config = write_setup(tmp_path, RULES, chatra=chatra)
    on_time, late = started(1, 0), started(2, 120)  # the second was written 2 minutes ago
    (tmp_path / "on_time.json").write_bytes(on_time)
    (tmp_path / "late.json").write_bytes(late)
    options = ["--config", str(config), "--channel", "online-chat", "--format", "json"]
    files = [str(tmp_path / "on_time.json"), str(tmp_path / "late.json")]
    result = CliRunner().invoke(cli, ["test", *options, "--until", "10s", *files])
    assert result.exit_code == 0, result.output
    fired = {}
    for item in json.loads(result.stdout)["results"]:
        for event in item["events"]:
            if "timer" in event:
                fired[event["event"]["conversation"]["id"]] = event["timer"]["outcome"]
    assert sorted(fired.values()) == ["dropped", "fired"], fired

    server = serve(config)
    for body in (on_time, late):
        assert httpx.post(server.webhook_url, content=body).status_code == 200
    wait_for(lambda: len(timers(tmp_path)) == 2 and all(
        timer["status"] != "pending" for timer in timers(tmp_path)
    ), timeout=30)  # fmt: skip
    outcomes = {timer["conversation_id"]: timer["status"] for timer in timers(tmp_path)}
    assert outcomes == fired
    wait_for(lambda: replies(chatra) == ["client00000001"], timeout=30)
