"""``rulekit why``: one event's trace, plan and attempts; privacy of its content."""

from __future__ import annotations

import json

from audit_site import JANE_EMAIL, REFUND_TEXT


def test_why_text_explains_rules_plan_and_attempts(site):
    result = site.run("why", "chatra:message:jane-2")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "event chatra:message:jane-2" in out
    assert "message on online-chat, conversation conv-jane, client Jane D." in out
    assert "✓ Refunds to Slack: conditions hold" in out
    assert "'refund' in message.text|lower  →  true" in out
    # Angry clients needs 'angry' in the text: the index left it out, and says it did
    assert "Angry clients" not in out
    assert "… 1 more rule(s) of this channel and event were not candidates" in out
    assert "→ slack:#ops: done, 2 attempt(s)" in out
    assert "attempt 1 at 2024-05-01 09:01:02 UTC: retry, error: 429 Too Many Requests" in out
    assert "attempt 2 at 2024-05-01 09:02:01 UTC: done, result:" in out
    # no content without --show-content: not the message, not the email, not in params
    assert REFUND_TEXT not in out and JANE_EMAIL not in out
    assert "[hidden] (--show-content shows it)" in out
    assert '"text": "Refund from Jane Doe: [hidden]"' in out


def test_why_shows_content_when_asked(site):
    out = site.run("why", "chatra:message:jane-2", "--show-content").output
    assert f"message (client): {REFUND_TEXT}" in out
    assert JANE_EMAIL in out
    assert f"Refund from Jane Doe: {REFUND_TEXT}" in out


def test_why_raw_payload_needs_show_content(site):
    hidden = site.run("why", "chatra:message:jane-2", "--raw").output
    assert "raw payload: [hidden]" in hidden
    shown = site.run("why", "chatra:message:jane-2", "--raw", "--show-content").output
    assert f'"t": "{REFUND_TEXT}"' in shown
    plain = site.run("why", "chatra:message:jane-2", "--show-content").output
    assert "raw payload" not in plain


def test_why_json_document(site):
    result = site.run("why", "chatra:message:bob-1", "--format", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["event_id"] == "chatra:message:bob-1"
    assert doc["data"]["message"]["text"] == "[hidden]"
    assert doc["data"]["client"]["display_name"] == "Visitor 4p40"
    rules = {rule["name"]: rule["matched"] for rule in doc["trace"]["rules"]}
    assert rules == {"Refunds to Slack": True, "Angry clients": True}
    jobs = [(job["action"], job["status"]) for job in doc["jobs"]]
    assert jobs == [("slack", "dead"), ("play_sound", "pending")]
    dead = doc["jobs"][0]
    assert [a["outcome"] for a in dead["attempts"]] == ["dead"]
    assert dead["attempts"][0]["error"] == "channel_not_found"
    assert doc["jobs"][1]["attempts"] == []
    assert "raw" not in doc


def test_unknown_event_is_an_error_with_suggestions(site):
    result = site.run("why", "chatra:message:jane")
    assert result.exit_code == 1
    assert "no event 'chatra:message:jane' was recorded" in result.output
    assert "did you mean 'chatra:message:jane-2'?" in result.output
    nothing = site.run("why", "zzz")
    assert nothing.exit_code == 1
    assert "did you mean" not in nothing.output


def test_a_missing_store_is_a_clear_error(tmp_path):
    from click.testing import CliRunner
    from scaffold import write

    from rulekit.cli.main import cli

    config = write(tmp_path / "rulekit.yaml", "storage: sqlite:///none.sqlite3\n")
    result = CliRunner().invoke(cli, ["why", "x", "--config", str(config)])
    assert result.exit_code == 2
    assert "no store at" in result.output and "none.sqlite3" in result.output
    assert not (tmp_path / "none.sqlite3").exists()
