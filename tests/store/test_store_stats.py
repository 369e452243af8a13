"""Per-rule statistics: matches recorded with their event, jobs by status, failed attempts,
a period, and retention taking them away with their events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from store_backends import event

from rulekit.store import JobSpec
from rulekit.store.records import RuleStats

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def trace(*matched: str, missed: tuple[str, ...] = ()) -> dict:
    rules = [{"name": name, "matched": True, "trace": {}} for name in matched]
    rules += [{"name": name, "matched": False, "trace": {}} for name in missed]
    return {"rules": rules, "plan": [], "errors": []}


def jobs(*rules: str) -> list[JobSpec]:
    return [JobSpec(rule, "slack", {"text": rule}, "slack:#ops") for rule in rules]


def test_rules_are_counted_per_period_with_their_jobs_and_attempts(backend) -> None:
    store = backend.open()
    with store.transaction() as state:
        state.record_event(
            event("e1"),
            inbox_id=None,
            trace=trace("Greet", missed=("Refund",)),
            jobs=jobs("Greet"),
            now=T0,
        )
        state.record_event(
            event("e2"),
            inbox_id=None,
            trace=trace("Greet", "Refund"),
            jobs=jobs("Greet", "Refund"),
            now=T0 + timedelta(days=2),
        )
        # a redelivery records (and counts) nothing
        state.record_event(event("e2"), inbox_id=None, trace=trace("Greet"), now=T0)
        greet_1, greet_2, refund = [j.id for j in state.jobs(event_id="e1")] + [
            j.id for j in state.jobs(event_id="e2")
        ]
        state.record_attempt(greet_1, "done", now=T0)
        state.record_attempt(greet_2, "retry", error="503", retry_at=T0, now=T0 + timedelta(days=2))
        state.record_attempt(greet_2, "done", now=T0 + timedelta(days=2))
        state.record_attempt(refund, "dead", error="400", now=T0 + timedelta(days=2))
    with backend.open().transaction() as state:  # another daemon reads the same
        assert state.rule_stats() == [
            RuleStats("Greet", matched=2, done=2, failed=1, last_fired=T0 + timedelta(days=2)),
            RuleStats("Refund", matched=1, failed=1, dead=1, last_fired=T0 + timedelta(days=2)),
        ]
        assert state.rule_stats(since=T0 + timedelta(days=1)) == [
            RuleStats("Greet", matched=1, done=1, failed=1, last_fired=T0 + timedelta(days=2)),
            RuleStats("Refund", matched=1, failed=1, dead=1, last_fired=T0 + timedelta(days=2)),
        ]
        assert state.rule_stats(since=T0 + timedelta(days=3)) == []


def test_retention_takes_the_matches_with_their_events(store) -> None:
    with store.transaction() as state:
        state.record_event(event("old"), inbox_id=None, trace=trace("Greet"), now=T0)
        state.record_event(
            event("new"), inbox_id=None, trace=trace("Greet"), now=T0 + timedelta(days=100)
        )
        state.purge(events_before=T0 + timedelta(days=10), payloads_before=T0)
        assert state.rule_stats() == [
            RuleStats("Greet", matched=1, last_fired=T0 + timedelta(days=100))
        ]
