"""The audit trail on PostgreSQL: a processed event, its jobs, its rule matches and its
conversation's activity written in one statement, and a round's events in one statement too
(:meth:`PostgresAudit.record_events`), where SQLite runs a statement per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from rulekit.event import Event
from rulekit.store.codec import event_json, to_json, trace_json
from rulekit.store.records import JobSpec, NewEvent, utc
from rulekit.store.sql.stats import matched_rules

# The time written for what is recorded: the caller's ``now`` (tests), else the database's
# clock, which claims go by. A daemon whose own clock ran ahead enqueued its plans' jobs due in
# the database's future: no daemon took them (its own neither) until its clock's lead was over.
_NOW = "COALESCE(:now::timestamptz, now())"

# The events of a round, their jobs and their matches (each row naming its event by its
# position in the round); jobs and matches are inserted only for the events inserted (a
# redelivered event enqueues nothing), the jobs in plan order.
_RECORD_EVENTS = (
    "WITH w AS (SELECT * FROM json_to_recordset(:events::json) AS w(n bigint, id text,"
    "  inbox bigint, channel text, event text, conversation text, client text,"
    "  occurred timestamptz, data json, trace json)),"
    " e AS (INSERT INTO events (event_id, inbox_id, channel, event, conversation_id,"
    "  occurred_at, data, trace, processed_at)"
    f"  SELECT id, inbox, channel, event, conversation, occurred, data, trace, {_NOW}"
    "  FROM w ORDER BY n ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
    # each conversation's activity once, with the last client an event of it names
    " t AS (SELECT DISTINCT ON (w.channel, w.conversation) w.channel, w.conversation, w.client"
    "  FROM w JOIN e ON e.event_id = w.id WHERE w.conversation IS NOT NULL"
    "  ORDER BY w.channel, w.conversation, w.client IS NULL, w.n DESC),"
    f" c AS (UPDATE conversations SET active_at = {_NOW},"
    "  client_id = coalesce(t.client, conversations.client_id)"
    "  FROM t WHERE conversations.id = t.conversation AND conversations.channel = t.channel"
    "  RETURNING 1),"
    " j AS (INSERT INTO outbox (event_id, rule, action, params, destination, lane,"
    "  next_attempt_at)"
    f"  SELECT w.id, s.rule, s.action, s.params, s.destination, s.lane, {_NOW}"
    "  FROM json_to_recordset(:jobs::json) AS s(n bigint, event bigint, rule text,"
    "   action text, params json, destination text, lane text)"
    "  JOIN w ON w.n = s.event JOIN e ON e.event_id = w.id"
    "  ORDER BY s.n RETURNING 1),"
    " m AS (INSERT INTO rule_matches (rule, event_id, matched_at)"
    f"  SELECT r.rule, w.id, {_NOW} FROM unnest(:m_events::bigint[], :matched::text[])"
    "   AS r(event, rule) JOIN w ON w.n = r.event JOIN e ON e.event_id = w.id"
    "  RETURNING 1)"
    " SELECT event_id FROM e"
)


class PostgresAudit:
    """The audit trail's statements of :class:`~rulekit.store.sql.postgres.PostgresState`."""

    execute: Callable[..., Any]
    """Provided by :class:`~rulekit.store.sql.state.SQLState`."""
    _one: Callable[..., Any]
    dialect: Any

    def record_event(
        self,
        event: Event,
        *,
        inbox_id: int | None,
        trace: Mapping[str, Any],
        jobs: Sequence[JobSpec] = (),
        now: datetime | None = None,
    ) -> bool:
        # The event and its jobs in one statement: the jobs are inserted only when the event
        # row was (a redelivered event enqueues nothing).
        row = self._one(
            "WITH e AS (INSERT INTO events (event_id, inbox_id, channel, event,"
            "  conversation_id, occurred_at, data, trace, processed_at)"
            "  VALUES (:id, :inbox, :channel, :event, :conversation,"
            f"   :occurred, :data::json, :trace::json, {_NOW})"
            "  ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
            # the conversation's activity, in the same round trip (only for a new event)
            f" c AS (UPDATE conversations SET active_at = {_NOW},"
            "  client_id = coalesce(:client, client_id)"
            "  WHERE id = :conversation AND channel = :channel AND EXISTS (SELECT 1 FROM e)"
            "  RETURNING 1),"
            " j AS (INSERT INTO outbox (event_id, rule, action, params, destination,"
            "  lane, next_attempt_at)"
            "  SELECT e.event_id, s.rule, s.action, s.params::json, s.destination, s.lane,"
            f"   {_NOW}"
            "  FROM e, unnest(:rules::text[], :actions::text[], :params::text[],"
            "   :destinations::text[], :lanes::text[]) WITH ORDINALITY"
            "   AS s(rule, action, params, destination, lane, n)"
            "  ORDER BY s.n RETURNING 1),"
            # which rules matched (rulekit stats), in the same round trip
            " m AS (INSERT INTO rule_matches (rule, event_id, matched_at)"
            f"  SELECT r.rule, e.event_id, {_NOW} FROM e, unnest(:matched::text[]) AS r(rule)"
            "  RETURNING 1)"
            " SELECT (SELECT count(*) FROM e) AS recorded, (SELECT count(*) FROM j) AS jobs,"
            "  (SELECT count(*) FROM m) AS matches",
            {
                "id": event.id,
                "inbox": inbox_id,
                "channel": event.channel,
                "event": event.event,
                "conversation": event.conversation.id,
                "client": event.client.id,
                "occurred": utc(event.occurred_at),
                "data": event_json(event),
                "trace": trace_json(trace),
                "now": None if now is None else utc(now),
                "rules": [job.rule for job in jobs],
                "actions": [job.action for job in jobs],
                "params": [self.dialect.json(job.params) for job in jobs],
                "destinations": [job.destination for job in jobs],
                "lanes": [job.lane or job.destination for job in jobs],
                "matched": matched_rules(trace),
            },
        )
        assert row is not None
        return bool(row["recorded"])

    def record_events(self, records: Sequence[NewEvent]) -> list[bool]:
        ids = [r.event.id for r in records]
        if len(set(ids)) != len(ids):  # an event twice: the second is a redelivery of the first
            return [
                self.record_event(r.event, inbox_id=r.inbox_id, trace=r.trace, jobs=r.jobs)
                for r in records
            ]
        if not records:
            return []
        json = self.dialect.json
        # the rows as one JSON document: the events' data and traces (JSON already) go in as
        # they are, where a list parameter would escape them character by character
        events = ",".join(
            f'{{"n":{n},"id":{to_json(r.event.id)},"inbox":{to_json(r.inbox_id)},'
            f'"channel":{to_json(r.event.channel)},"event":{to_json(r.event.event)},'
            f'"conversation":{to_json(r.event.conversation.id)},'
            f'"client":{to_json(r.event.client.id)},'
            f'"occurred":{to_json(utc(r.event.occurred_at).isoformat())},'
            f'"data":{event_json(r.event)},"trace":{trace_json(r.trace)}}}'
            for n, r in enumerate(records, 1)
        )
        jobs = ",".join(
            f'{{"n":{k},"event":{n},"rule":{to_json(job.rule)},'
            f'"action":{to_json(job.action)},"params":{json(job.params)},'
            f'"destination":{to_json(job.destination)},'
            f'"lane":{to_json(job.lane or job.destination)}}}'
            for k, (n, job) in enumerate(
                ((n, job) for n, r in enumerate(records, 1) for job in r.jobs), 1
            )
        )
        matches = [(n, rule) for n, r in enumerate(records, 1) for rule in matched_rules(r.trace)]
        rows = self.execute(
            _RECORD_EVENTS,
            {
                "now": None,
                "events": f"[{events}]",
                "jobs": f"[{jobs}]",
                "m_events": [n for n, _ in matches],
                "matched": [rule for _, rule in matches],
            },
        ).fetchall()
        recorded = {row["event_id"] for row in rows}
        return [event_id in recorded for event_id in ids]
