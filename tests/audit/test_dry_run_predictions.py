"""``rulekit test`` says, per action, what will fail at run time with this config."""

from __future__ import annotations

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
