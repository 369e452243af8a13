"""The daemon evaluates through the rule index, like ``rulekit test`` and ``replay``: the trace
it records holds the candidates in full and only counts the rules the index left out;
``rulekit why --excluded`` rebuilds their reasons from the rules of the recorded version."""

from __future__ import annotations

import json
import sqlite3

import httpx
import pytest
from click.testing import CliRunner
from daemons import chat_started, wait_for, write_setup

from rulekit.cli.main import cli

RULES = 10_000


GREET = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do: [{autoreply: {text: 'Hello {{ client.display_name }}'}}]
"""


def _write_customers(folder) -> None:
    """10,000 rules, one per visitor number, in files of 500 after ``rules.yaml``."""
    for first in range(0, RULES, 500):
        lines = []
        for n in range(first, first + 500):
            lines += [
                f"- name: Customer {n}",
                "  on: {channel: online-chat, event: created}",
                f"  if: \"client.display_name.endswith(' {n}')\"",
                "  do: [{play_sound: {sound: bell}}]",
            ]
        (folder / "rules.d" / f"zz-customers-{first:05d}.yaml").write_text("\n".join(lines))


def _trace(folder, event_id: str) -> dict:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        (trace,) = conn.execute(
            "SELECT trace FROM events WHERE event_id = ?", (event_id,)
        ).fetchone()
    return json.loads(trace)


def _event_ids(folder) -> list[str]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM events")]


@pytest.mark.slow
def test_a_daemon_with_10000_rules_evaluates_only_candidates(tmp_path, serve, chatra):
    config = write_setup(tmp_path, GREET, chatra=chatra)
    _write_customers(tmp_path)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(7)).status_code == 200
    wait_for(lambda: chatra.sent, timeout=120)
    (event_id,) = _event_ids(tmp_path)
    trace = _trace(tmp_path, event_id)
    # "Visitor 7": the greeting and the one customer rule whose suffix is " 7" are candidates
    assert [(r["name"], r["matched"]) for r in trace["rules"]] == [
        ("Greet", True),
        ("Customer 7", True),
    ]
    assert trace["excluded"] == RULES - 1
    server.stop()

    runner = CliRunner()
    plain = runner.invoke(cli, ["why", event_id, "--config", str(config)])
    assert plain.exit_code == 0, plain.output
    assert f"… {RULES - 1} more rule(s) of this channel and event were not candidates" in (
        plain.output
    )
    asked = runner.invoke(cli, ["why", event_id, "--config", str(config), "--excluded"])
    assert asked.exit_code == 0, asked.output
    assert "✗ Customer 8: not a candidate: client.display_name does not end with ' 8'" in (
        asked.output
    )
    assert asked.output.count("not a candidate") == RULES - 1

    (tmp_path / "rules.d" / "rules.yaml").write_text(GREET.replace("Greet", "Welcome"))
    changed = runner.invoke(cli, ["why", event_id, "--config", str(config), "--excluded"])
    assert changed.exit_code == 0, changed.output
    assert "cannot be rebuilt" in changed.output
    assert "not a candidate" not in changed.output
