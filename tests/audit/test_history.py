"""``rulekit history``: recent events one line each, filters, privacy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from audit_site import JANE_EMAIL, REFUND_TEXT

from rulekit.audit.history import parse_since


def ids(output: str) -> list[str]:
    return [line.split()[2] for line in output.splitlines() if line[:2] == "20"]


def test_history_lists_newest_first_with_rules_and_outcomes(site):
    result = site.run("history")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert ids(result.output) == [
        "chatra:message:bob-1",
        "chatra:message:jane-2",
        "chatra:created:jane-1",
    ]
    assert lines[0] == (
        "2024-05-01 09:02:01  chatra:message:bob-1  online-chat  message  Visitor 4p40  "
        "rules: Refunds to Slack, Angry clients  actions: 1 pending, 1 dead"
    )
    assert lines[2].endswith("Jane D.  rules: Bell for new chats  actions: 1 done")
    assert JANE_EMAIL not in result.output and REFUND_TEXT not in result.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--event", "created"], ["chatra:created:jane-1"]),
        (["--rule", "Refunds to Slack"], ["chatra:message:bob-1", "chatra:message:jane-2"]),
        (["--rule", "Angry clients"], ["chatra:message:bob-1"]),
        (["--failed"], ["chatra:message:bob-1"]),
        (["--channel", "telegram"], []),
        (["--limit", "1"], ["chatra:message:bob-1"]),
        (
            ["--since", "2024-05-01T09:01:00+00:00"],
            ["chatra:message:bob-1", "chatra:message:jane-2"],
        ),
        (["--since", "7d"], []),  # recorded in 2024: nothing in the last week
    ],
)
def test_history_filters(site, args, expected):
    result = site.run("history", *args)
    assert result.exit_code == 0, result.output
    assert ids(result.output) == expected
    if not expected:
        assert result.output == "no recorded events match\n"


def test_history_shows_content_when_asked(site):
    out = site.run("history", "--show-content", "--event", "message").output
    assert f"Jane D. <{JANE_EMAIL}>" in out
    assert f"    message: {REFUND_TEXT}" in out


def test_history_json(site):
    result = site.run("history", "--format", "json", "--failed")
    doc = json.loads(result.output)
    (event,) = doc["events"]
    assert event["event_id"] == "chatra:message:bob-1"
    assert event["client"] == {"id": "c-bob", "display_name": "Visitor 4p40"}
    assert event["matched"] == ["Refunds to Slack", "Angry clients"]
    assert [(j["action"], j["status"]) for j in event["jobs"]] == [
        ("slack", "dead"),
        ("play_sound", "pending"),
    ]
    assert "message" not in event
    shown = json.loads(site.run("history", "--format", "json", "--show-content").output)
    assert shown["events"][1]["client"]["email"] == JANE_EMAIL


def test_since_accepts_durations_and_times():
    now = datetime(2024, 5, 8, 12, 0, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2024-05-02", now) == datetime(2024, 5, 2, tzinfo=UTC)
    assert parse_since(None, now) is None


def test_a_bad_since_is_a_usage_error(site):
    result = site.run("history", "--since", "soon")
    assert result.exit_code == 2
    assert "--since" in result.output
