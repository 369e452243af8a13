"""Per-rule statistics in a SQL store: the ``rule_matches`` table (one row per rule an event
matched, written with the event's record) read per rule and period, with the jobs and attempts
of the journal. Retention deletes a rule's matches with their event."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from rulekit.store.codec import EncodedTrace
from rulekit.store.records import RuleStats

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

NOTE_MATCH = (
    "INSERT INTO rule_matches (rule, event_id, matched_at) VALUES (:rule, :event, :now)"
    " ON CONFLICT (rule, event_id) DO NOTHING"
)


def matched_rules(trace: Mapping[str, Any]) -> list[str]:
    """The names of the rules a stored trace says matched, once each (of a trace encoded by
    the engine, the names it kept as it encoded it: the text is not decoded)."""
    if isinstance(trace, EncodedTrace):
        return list(dict.fromkeys(name for name in trace.matched if isinstance(name, str)))
    names = [
        rule.get("name")
        for rule in trace.get("rules") or []
        if isinstance(rule, dict) and rule.get("matched")
    ]
    return list(dict.fromkeys(name for name in names if isinstance(name, str)))


class SQLStats:
    """Statistics statements, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    dialect: Any

    def execute(self, sql: str, params: Any = ()) -> Any:  # provided by SQLState
        raise NotImplementedError

    def rule_stats(self, *, since: datetime | None = None) -> list[RuleStats]:
        """See :meth:`rulekit.store.base.Journal.rule_stats`."""
        time, read = self.dialect.time, self.dialect.read_time
        bound = {"since": time(since or EPOCH)}
        found: dict[str, dict[str, Any]] = {}

        def of(rule: str) -> dict[str, Any]:
            return found.setdefault(rule, {"rule": rule})

        for row in self.execute(
            "SELECT rule, count(*) AS n, max(matched_at) AS last FROM rule_matches"
            " WHERE matched_at >= :since GROUP BY rule",
            bound,
        ):
            of(row["rule"]).update(matched=row["n"], last_fired=read(row["last"]))
        for row in self.execute(
            "SELECT o.rule, o.status, count(*) AS n FROM outbox o"
            " JOIN events e ON e.event_id = o.event_id WHERE e.processed_at >= :since"
            " GROUP BY o.rule, o.status",
            bound,
        ):
            of(row["rule"])[row["status"]] = row["n"]
        for row in self.execute(
            "SELECT o.rule, count(*) AS n FROM attempts a JOIN outbox o ON o.id = a.job_id"
            " WHERE a.outcome <> 'done' AND a.at >= :since GROUP BY o.rule",
            bound,
        ):
            of(row["rule"])["failed"] = row["n"]
        return [RuleStats(**values) for _, values in sorted(found.items())]
