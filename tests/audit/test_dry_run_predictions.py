"""``rulekit test`` says, per action, what will fail at run time with this config."""

from __future__ import annotations

import json

from click.testing import CliRunner
from scaffold import write

from rulekit.cli.main import cli

CONFIG = """
channels:
  online-chat:
    {provider: chatra, public_key: p, secret_key: s, webhook_secret: w, default_group: support}
groups: [support, sales]
tags: [vip, billing]
agents:
  - {email: anna@shop.example, groups: [support], channels: [online-chat]}
  - {email: lena@shop.example, groups: [sales], channels: []}
integrations:
  slack: {token: "${DRY_RUN_SLACK_TOKEN}"}
"""

RULES = """
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hi"}
    - assign: {group: sales}
    - tag: {add: ["{{ client.custom.tier }}"]}
    - slack: {channel: "#chats", text: "new chat"}
    - assign: {group: support}
    - autoreply: {text: "Anna here"}
"""

EVENT = """
channel: online-chat
event: created
conversation: {id: c1}
client: {id: v1, custom: {tier: gold}}
message: {text: hi, author: client}
"""


def test_each_action_that_would_fail_says_why(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DRY_RUN_SLACK_TOKEN", raising=False)
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    rules = write(tmp_path / "rules" / "rules.yaml", RULES)
    event = write(tmp_path / "event.yaml", EVENT)
    result = CliRunner().invoke(
        cli, ["test", "--config", str(config), "--rules", str(rules.parent), str(event)]
    )
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    failures = [
        (lines[i - 1].strip().split(" (")[0], line.strip())
        for i, line in enumerate(lines)
        if line.strip().startswith("would fail:")
    ]
    assert failures == [
        ("→ autoreply", "would fail: no agent to send as: the conversation has no assignee and "
         "channel 'online-chat' has no default sender (default_agent or default_agent_id)"),
        ("→ assign", "would fail: no agent in group 'sales' has access to channel 'online-chat': "
         "the assign will pick nobody"),
        ("→ tag", "would fail: unknown tag 'gold' (config: tags)"),
        ("→ slack", "would fail: the Slack token is empty"),
    ]  # fmt: skip
    # the second reply comes after an assign that can pick Anna: nothing to say
    assert "${DRY_RUN_SLACK_TOKEN} is unset or empty" in result.output


CAPACITY_CONFIG = """
channels:
  online-chat: {provider: webhook, webhook_secret: w, default_group: support}
groups:
  support: {max_open: 1}
agents:
  - {email: anna@shop.example, groups: [support], channels: [online-chat]}
  - {email: boris@shop.example, groups: [support], channels: [online-chat], max_open: 2}
"""

CAPACITY_RULES = """
- name: Assign new chats
  on: {channel: online-chat, event: created}
  do:
    - assign: {group: support, strategy: least_open}
"""


def chat(number: int, assignee: str | None = None) -> str:
    owner = f", assignee: {assignee}" if assignee else ""
    return f"""
- channel: online-chat
  event: created
  occurred_at: 2026-05-01T10:0{number}:00Z
  conversation: {{id: c{number}, status: open{owner}}}
  client: {{id: v{number}}}
  message: {{text: hi, author: client}}
"""


def test_assign_would_fail_when_everyone_is_at_max_open_as_the_simulation_counts(
    tmp_path,
) -> None:
    """Anna (support: 1) and Boris (his own 2) fill up as the simulated chats come in: the
    dry run says the assign would fail exactly from the chat on which both are full."""
    config = write(tmp_path / "rulekit.yaml", CAPACITY_CONFIG)
    rules = write(tmp_path / "rules" / "rules.yaml", CAPACITY_RULES)
    chats = [
        chat(1, "anna@shop.example"),  # Anna: 1 of 1
        chat(2, "boris@shop.example"),  # Boris: 1 of 2, can take one more
        chat(3, "boris@shop.example"),  # Boris: 2 of 2
        chat(4),
    ]
    events = write(tmp_path / "events.yaml", "".join(chats))
    result = CliRunner().invoke(
        cli,
        [
            "test",
            "--config",
            str(config),
            "--rules",
            str(rules.parent),
            "--format=json",
            str(events),
        ],
    )
    assert result.exit_code == 0, result.output
    [results] = json.loads(result.output)["results"]
    predicted = {
        event["event"]["conversation"]["id"]: event["actions"][0].get("would_fail")
        for event in results["events"]
        if event["event"]["origin"] == "channel"  # (not the `updated` events assigns emit)
    }
    full = (
        "every agent of group 'support' who could take it is at capacity (max_open): "
        "the conversation waits in group 'support', unassigned"
    )
    # a chat already assigned does not count against its own agent (as the daemon counts)
    assert predicted == {"c1": None, "c2": None, "c3": None, "c4": full}
