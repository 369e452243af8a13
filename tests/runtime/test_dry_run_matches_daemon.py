"""``rulekit test`` says what the daemon does: the same config, rules and Chatra samples go
through a dry run and through a daemon (real SQLite, the fake Chatra, Slack and Telegram), and
the actions the dry run plans are the jobs the daemon records, with the same rendered
parameters; an action the dry run says would fail is one the daemon dead-letters; and what
the fakes received is what the dry run rendered.

The samples go in in time order, and in the order of their names (some then arrive after later
ones, as late webhooks do), each once the daemon has done the jobs of the one before (as a dry
run assumes: an action's change is made before the next input)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from daemons import wait_for, write_setup

from rulekit.cli.main import cli

SAMPLES = Path(__file__).parents[2] / "examples" / "chatra"
IN_TIME_ORDER = [
    "chat_started_anonymous.json",
    "chat_fragment_client_message.json",
    "chat_fragment_agent_reply_from_app.json",
    "chat_fragment_api_echo.json",
    "chat_started_bound_user_agent_initiated.json",
    "chat_transcript_with_email.json",
    "chat_fragment_prechat_form.json",
    "chat_reopened_1_transcript.json",
    "chat_reopened_2_started.json",
]
IN_NAME_ORDER = sorted(IN_TIME_ORDER)
"""As ``rulekit test examples/chatra/`` takes them: some arrive after later ones (late)."""

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hi {{ client.display_name }}, it is {{ now | datetime('%H:%M') }}"}
    - tag: {add: [vip]}
    - assign: {group: support}
    - tag: {add: ["{{ client.custom.Plan or 'none' }}"]}   # no such tag: dead-lettered

- name: Tagged conversations
  on: {channel: online-chat, event: [created, message, reopened]}
  if: "'vip' in conversation.tags"
  do:
    - slack:
        channel: "#vip"
        text: "*VIP* {{ client.display_name }} ({{ conversation.assignee }}): {{ message.text }}"

- name: Assigned
  on: {channel: online-chat, event: [assigned, updated]}
  allow_own_events: true
  do:
    - play_sound: {sound: "{{ 'bell' if event == 'assigned' else 'chime' }}", to: everyone}

- name: Reopened
  on: {channel: online-chat, event: reopened}
  cooldown: 1h
  do:
    - telegram:
        chat_id: "-100"
        parse_mode: HTML
        text: "<b>{{ client.name }}</b> is back ({{ conversation.assignee }}): {{ message.text }}"
"""


def _dry_run(config: Path, names: list[str]) -> list[dict[str, Any]]:
    files = [str(SAMPLES / name) for name in names]
    options = ["--config", str(config), "--channel", "online-chat", "--format", "json"]
    result = CliRunner().invoke(cli, ["test", *options, *files])
    assert result.exit_code == 0, result.output
    planned = []
    for item in json.loads(result.stdout)["results"]:
        assert item["error"] is None
        for event in item["events"]:
            assert event["errors"] == []
            for action in event["actions"]:
                if not action.get("skipped"):
                    planned.append({"event": event["event"]["event"], **action})
    return planned


def _jobs(folder: Path) -> list[tuple[str, str, str, str, str]]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        return conn.execute(
            "SELECT e.event, o.rule, o.action, o.params, o.status FROM outbox o "
            "JOIN events e USING (event_id) ORDER BY o.id"
        ).fetchall()


def _key(event: str, rule: str, action: str, params: dict[str, Any]) -> str:
    return json.dumps([event, rule, action, params], sort_keys=True)


@pytest.mark.slow  # (the daemon works through nine bodies and their jobs, one after another)
@pytest.mark.parametrize("names", [IN_TIME_ORDER, IN_NAME_ORDER], ids=["time", "name"])
def test_the_dry_run_plans_what_the_daemon_does(
    tmp_path, serve, chatra, fake_slack, fake_telegram, names
) -> None:
    config = write_setup(
        tmp_path, RULES, chatra=chatra, slack=fake_slack, telegram=fake_telegram,
        extra="tags: [vip]\n",
    )  # fmt: skip
    planned = _dry_run(config, names)
    server = serve(config)
    for name in names:
        response = httpx.post(server.webhook_url, content=(SAMPLES / name).read_bytes())
        assert response.status_code == 200
        # the body's events recorded, and every job (and the events they emitted) done
        wait_for(lambda: _settled(tmp_path), timeout=30)
    jobs = _jobs(tmp_path)

    ran = Counter(_key(e, rule, a, json.loads(p)) for e, rule, a, p, _ in jobs)
    said = Counter(_key(p["event"], p["rule"], p["action"], p["params"]) for p in planned)
    assert said == ran
    # what would fail is what is dead-lettered
    dead = Counter(_key(e, rule, a, json.loads(p)) for e, rule, a, p, s in jobs if s == "dead")
    failing = Counter(
        _key(p["event"], p["rule"], p["action"], p["params"])
        for p in planned
        if p.get("would_fail")
    )
    assert failing == dead and dead
    # the texts the services received are the texts the dry run rendered
    texts = {
        action: [p["params"]["text"] for p in planned if p["action"] == action]
        for action in ("autoreply", "slack", "telegram")
    }
    assert sorted(texts["autoreply"]) == sorted(m["text"] for m in chatra.sent)
    assert sorted(texts["slack"]) == sorted(m.text for m in fake_slack.messages())
    assert sorted(texts["telegram"]) == sorted(m.text for m in fake_telegram.messages())
    # the rules that read what actions changed did fire, in both
    assert any(p["rule"] == "Assigned" for p in planned)
    assert any("(anna@example.com)" in text for text in texts["slack"])
    assert any("(anna@example.com)" in text for text in texts["telegram"])


def _settled(folder: Path) -> bool:
    """Every body processed and every job done (or dead): the events jobs emit are recorded
    with their outcome, their own jobs with them."""
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        (inbox,) = conn.execute("SELECT count(*) FROM inbox WHERE status = 'pending'").fetchone()
        (jobs,) = conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
    return inbox == 0 and jobs == 0
