"""A live feed message's lists are capped: the daemon keeps the feed's recent messages and each
console stream its backlog, so an event that thousands of rules matched must not make one
message as large as the rule set (the event's trace and its jobs keep them all)."""

from __future__ import annotations

import json

from scaffold import make_event

from rulekit.runtime.planning import MAX_FEED_ERRORS, MAX_FEED_RULES, Processed
from rulekit.store.records import JobSpec

RULES = 5_000


def test_a_feed_message_carries_the_first_rules_and_actions_and_counts_the_rest() -> None:
    names = [f"notify team {n} of every new chat" for n in range(RULES)]
    jobs = [JobSpec(name, "play_sound", {"sound": "bell"}, "play_sound") for name in names]
    errors = [f"rule {name!r}: autoreply: failed" for name in names[:MAX_FEED_ERRORS]]
    message = Processed(make_event(), True, names, jobs, errors).message()
    assert message["matched"] == names[:MAX_FEED_RULES]
    assert message["matched_more"] == RULES - MAX_FEED_RULES
    assert len(message["actions"]) == MAX_FEED_RULES
    assert message["actions_more"] == RULES - MAX_FEED_RULES
    assert len(json.dumps(message)) < 20_000


def test_a_feed_message_under_the_caps_says_nothing_more() -> None:
    message = Processed(make_event(), True, ["one"], [], []).message()
    assert message["matched"] == ["one"]
    assert "matched_more" not in message and "actions_more" not in message
