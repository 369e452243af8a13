"""``rulekit replay``: candidate rules over recorded events, compared with what happened."""

from __future__ import annotations

import json

from audit_site import REFUND_TEXT, RULES, write

CANDIDATE = (
    RULES.replace("Refund from {{ client.name }}", "Refund request by {{ client.name }}").replace(
        """- name: Bell for new chats
  on: {channel: online-chat, event: created}
  do:
    - play_sound: {sound: bell, to: everyone}
""",
        "",
    )
    + """
- name: Angry clients to the leads
  on: {channel: online-chat, event: message}
  if: "'angry' in message.text|lower"
  do:
    - slack: {channel: "#leads", text: "Angry: {{ client.display_name }}"}
"""
)


def candidate(site, text: str = CANDIDATE) -> str:
    return str(write(site.root / "candidate" / "rules.yaml", text).parent)


def dump(site) -> list:
    return [site.sql(f"SELECT * FROM {t}") for t in ("events", "outbox", "attempts", "inbox")]


def test_replay_shows_added_removed_and_changed_actions(site):
    before = dump(site)
    result = site.run("replay", "--rules", candidate(site))
    assert result.exit_code == 0, result.output
    out = result.output
    assert (
        "chatra:created:jane-1  created on online-chat\n  - play_sound (Bell for new chats)" in out
    )
    assert (
        "chatra:message:jane-2  message on online-chat\n"
        "  ~ slack (Refunds to Slack)\n"
        '      text: "Refund from Jane Doe: [hidden]" → "Refund request by Jane Doe: [hidden]"'
    ) in out
    assert (
        "chatra:message:bob-1  message on online-chat\n"
        '  + slack (Angry clients to the leads) {"attachments": null, "blocks": null, '
        '"channel": "#leads", '
        '"text": "Angry: Visitor 4p40"}\n'
        "  ~ slack (Refunds to Slack)"
    ) in out
    assert "3 event(s) replayed, 3 would change: 1 action(s) added, 1 removed, 2 changed" in out
    assert "  rule Bell for new chats: fired on 1 event(s) then, 0 now" in out
    assert "  rule Angry clients to the leads: fired on 0 event(s) then, 1 now" in out
    assert "note: cooldowns are not replayed" in out
    assert dump(site) == before  # pure: nothing written


def test_replay_param_diff_with_content(site):
    out = site.run("replay", "--rules", candidate(site), "--show-content").output
    assert (
        f'      text: "Refund from Jane Doe: {REFUND_TEXT}" → '
        f'"Refund request by Jane Doe: {REFUND_TEXT}"'
    ) in out


def test_replaying_the_same_rules_changes_nothing(site):
    result = site.run("replay", "--rules", str(site.root / "rules.d"))
    assert "warning: " in result.stderr  # Slack is not configured in the test config
    out = result.stdout
    assert out.startswith("3 event(s) replayed, 0 would change: 0 action(s) added, 0 removed")
    listed = site.run("replay", "--rules", str(site.root / "rules.d"), "--all").output
    assert "chatra:message:bob-1  message on online-chat\n  = 2 action(s), unchanged" in listed


def test_replay_json_and_since(site):
    result = site.run(
        "replay", "--rules", candidate(site), "--format", "json", "--since", "2024-05-01T09:01:30Z"
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["summary"]["events"] == 1
    (event,) = doc["events"]
    assert event["event_id"] == "chatra:message:bob-1"
    assert [(a["rule"], a["action"]) for a in event["added"]] == [
        ("Angry clients to the leads", "slack")
    ]
    assert event["removed"] == []
    assert event["changed"] == [
        {
            "rule": "Refunds to Slack",
            "action": "slack",
            "params": {
                "text": {
                    "then": "Refund from Bob Roe: [hidden]",
                    "now": "Refund request by Bob Roe: [hidden]",
                }
            },
        }
    ]
    assert event["unchanged"] == 1


def test_invalid_candidate_rules_are_reported(site):
    result = site.run("replay", "--rules", candidate(site, "- name: x\n  on: {channel: nope}\n"))
    assert result.exit_code == 1
    assert "error:" in result.output
