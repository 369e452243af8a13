"""The audit trail and the outbox in a SQL store: an event recorded with its plan's jobs, jobs
claimed by lane, a call's start and its attempts recorded; and the named leases of one-at-a-time
work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from rulekit.errors import StoreError
from rulekit.event import Event
from rulekit.store.codec import event_json, trace_json
from rulekit.store.erasure import ERASURE_ERRORS
from rulekit.store.records import (
    APPLIED,
    INTERRUPTED,
    Job,
    JobSpec,
    JobStatus,
    NewEvent,
    Outcome,
    check_attempt,
    utc,
)
from rulekit.store.sql import listing
from rulekit.store.sql.dialect import Row
from rulekit.store.sql.stats import NOTE_MATCH, matched_rules

_START_OURS = (
    "UPDATE outbox SET call_started_at = :now, call_started_by = :owner,"
    " claimed_until = :until WHERE id = :id AND status = 'pending' AND claimed_by = :owner"
    " AND (call_started_by IS NULL OR call_started_by = :owner)"
    " AND NOT EXISTS (SELECT 1 FROM outbox k WHERE k.lane = outbox.lane"
    " AND k.status = 'pending' AND k.id < outbox.id)"
)
"""What :meth:`SQLOutbox.start_call` does when the call may start and nothing else is to be
recorded: the one statement of the usual case."""

ERASURE_PARAMS = {f"erasure{n}": error for n, error in enumerate(ERASURE_ERRORS)}
ERASED_JOB = f"last_error IN ({', '.join(f':{key}' for key in ERASURE_PARAMS)})"
"""Whether a job is one erasure stopped (:data:`~rulekit.store.erasure.ERASURE_ERRORS`),
with :data:`ERASURE_PARAMS`."""

_RECORD = (
    "INSERT INTO events (event_id, inbox_id, channel, event, conversation_id,"
    " occurred_at, data, trace, processed_at) VALUES (:id, :inbox, :channel, :event,"
    " :conversation, :occurred, :data, :trace, :now)"
    " ON CONFLICT (event_id) DO NOTHING"
)
"""An event's record, unless one with its id was recorded before."""

_ENQUEUE = (
    "INSERT INTO outbox (event_id, rule, action, params, destination, lane,"
    " next_attempt_at) VALUES (:event, :rule, :action, :params, :destination,"
    " :lane, :now)"
)
"""A job of an event's plan, due ``now``."""


_new = object.__new__


class SQLOutbox:
    """Audit trail, outbox and lease statements, mixed into
    :class:`~rulekit.store.sql.state.SQLState`."""

    # provided by SQLState
    dialect: Any
    execute: Callable[..., Any]
    execute_many: Callable[..., Any]
    _one: Callable[..., Any]
    recorded: Callable[[Sequence[str]], set[str]]
    mark_messages_seen: Callable[[str, Sequence[str]], list[bool]]

    def _job(self, row: Row) -> Job:
        time, json = self.dialect.read_time, self.dialect.read_json
        result = json(row["result"])
        if type(result) is dict and APPLIED in result:  # a call's note, not an outcome
            result = None
        # a claim decodes a job per row: the frozen dataclass's ``__init__`` sets each field
        # through ``object.__setattr__``, most of the decoding's cost; its fields set at once
        job: Job = _new(Job)
        job.__dict__.update(
            id=row["id"],
            event_id=row["event_id"],
            rule=row["rule"],
            action=row["action"],
            params=json(row["params"]),
            destination=row["destination"],
            status=row["status"],
            attempts=row["attempts"],
            next_attempt_at=time(row["next_attempt_at"]),
            last_error=row["last_error"],
            result=result,
            claimed_by=row["claimed_by"],
            claimed_until=time(row["claimed_until"]),
            lane=row["lane"],
            call_started_at=time(row["call_started_at"]),
            call_started_by=row["call_started_by"],
        )
        return job

    def record_event(
        self,
        event: Event,
        *,
        inbox_id: int | None,
        trace: Mapping[str, Any],
        jobs: Sequence[JobSpec] = (),
        now: datetime | None = None,
    ) -> bool:
        at = self.dialect.time(utc(now))
        row = self._event_row(event, inbox_id, trace, at)
        if self._one(_RECORD + " RETURNING id", row) is None:
            return False
        if event.conversation.id is not None:
            self.execute(listing.TOUCH, _touch_row(event, at))
        for rule in matched_rules(trace):
            self.execute(NOTE_MATCH, {"rule": rule, "event": event.id, "now": at})
        for job in jobs:
            self.execute(_ENQUEUE, self._job_row(event, job, at))
        return True

    def record_events(self, records: Sequence[NewEvent]) -> list[bool]:
        # SQLite: each statement once for the whole round (one call into the driver each),
        # in the order one by one would make them: the events, their conversations' activity,
        # their matches, and their jobs (in plan order, event after event). Which events were
        # recorded before is read first; the store's write lock keeps it so until the commit.
        ids = [r.event.id for r in records]
        if len(records) < 2 or len(set(ids)) != len(ids):  # an event twice: one by one
            return [
                self.record_event(r.event, inbox_id=r.inbox_id, trace=r.trace, jobs=r.jobs)
                for r in records
            ]
        before = self.recorded(ids)
        new = [r for r in records if r.event.id not in before]
        at = self.dialect.time(utc())
        added = self.execute_many(
            _RECORD, [self._event_row(r.event, r.inbox_id, r.trace, at) for r in new]
        ).rowcount
        if added != len(new):  # recorded meanwhile by another transaction: cannot be
            raise StoreError(f"{len(new) - added} of the round's events were recorded meanwhile")
        self.execute_many(
            listing.TOUCH,
            [_touch_row(r.event, at) for r in new if r.event.conversation.id is not None],
        )
        self.execute_many(
            NOTE_MATCH,
            [
                {"rule": rule, "event": r.event.id, "now": at}
                for r in new
                for rule in matched_rules(r.trace)
            ],
        )
        self.execute_many(
            _ENQUEUE, [self._job_row(r.event, job, at) for r in new for job in r.jobs]
        )
        return [event_id not in before for event_id in ids]

    def _event_row(
        self, event: Event, inbox_id: int | None, trace: Mapping[str, Any], at: str
    ) -> dict[str, Any]:
        return {
            "id": event.id,
            "inbox": inbox_id,
            "channel": event.channel,
            "event": event.event,
            "conversation": event.conversation.id,
            "occurred": self.dialect.time(event.occurred_at),
            "data": event_json(event),
            "trace": trace_json(trace),
            "now": at,
        }

    def _job_row(self, event: Event, job: JobSpec, at: str) -> dict[str, Any]:
        return {
            "event": event.id,
            "rule": job.rule,
            "action": job.action,
            "params": self.dialect.json(job.params),
            "destination": job.destination,
            "lane": job.lane or job.destination,
            "now": at,
        }

    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        now = utc(now)
        # a due job that is free (or ours), in a lane nobody else holds, with every older
        # pending job of its lane due too: the due prefix of each free lane. Whether a lane is
        # held, and its oldest job not due yet, are read once per lane (``lanes``), not once
        # per due job: per job, a lane of n due jobs cost n * n rows (a minute per claim for
        # a lane of 15,000, all of one webhook's replies; or a lane behind a retry)
        rows = self.execute(
            "UPDATE outbox SET claimed_by = :owner, claimed_until = :until"
            " WHERE id IN (WITH due AS MATERIALIZED (SELECT j.id, j.lane FROM outbox j"
            f" {self.dialect.by_index('outbox_due')} WHERE j.status = 'pending'"
            "   AND j.next_attempt_at <= :now"
            "   AND (j.claimed_until IS NULL OR j.claimed_until <= :now)),"
            " lanes AS (SELECT k.lane AS lane,"
            "   MIN(CASE WHEN k.next_attempt_at > :now THEN k.id END) AS waiting,"
            "   SUM(CASE WHEN k.claimed_until > :now AND k.claimed_by <> :owner THEN 1 ELSE 0"
            "    END) AS held"
            f"  FROM outbox k {self.dialect.by_index('outbox_pending_by_lane')}"
            "  WHERE k.status = 'pending' AND k.lane IN (SELECT lane FROM due) GROUP BY k.lane)"
            " SELECT due.id FROM due JOIN lanes ON lanes.lane = due.lane"
            "  WHERE lanes.held = 0 AND (lanes.waiting IS NULL OR due.id < lanes.waiting)"
            "  ORDER BY due.id LIMIT :limit)"
            " RETURNING *",
            {
                "owner": owner,
                "until": self.dialect.time(now + timedelta(seconds=lease)),
                "now": self.dialect.time(now),
                "limit": limit,
            },
        ).fetchall()
        return sorted((self._job(row) for row in rows), key=lambda job: job.id)

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        now = utc(now)
        times = {
            "now": self.dialect.time(now),
            "owner": owner,
            "until": self.dialect.time(now + timedelta(seconds=lease)),
            "id": job_id,
        }
        # the usual case in one statement: ours, first pending of its lane, no call of another
        # claimer to count as interrupted; anything else is told apart below
        if self.execute(_START_OURS, times).rowcount == 1:
            return True
        row = self._one(
            "SELECT status, claimed_by, lane, call_started_by FROM outbox WHERE id = :id",
            {"id": job_id},
        )
        if row is None:
            raise KeyError(f"no job {job_id}")
        if row["status"] != "pending" or row["claimed_by"] != owner:
            return False
        if self._one(
            "SELECT 1 AS older FROM outbox WHERE lane = :lane AND status = 'pending'"
            " AND id < :id LIMIT 1",
            {"lane": row["lane"], "id": job_id},
        ):
            self.execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = :id",
                {"id": job_id},
            )
            return False
        if row["call_started_by"] not in (None, owner):
            self.execute(
                "INSERT INTO attempts (job_id, at, outcome, error)"
                " VALUES (:id, :now, 'retry', :error)",
                {"id": job_id, "now": self.dialect.time(now), "error": INTERRUPTED},
            )
            self.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = :id", {"id": job_id})
        self.execute(
            "UPDATE outbox SET call_started_at = :now, call_started_by = :owner,"
            " claimed_until = :until WHERE id = :id",
            times,
        )
        return True

    def applied_change(self, job_id: int) -> dict[str, Any] | None:
        row = self._one(
            "SELECT result FROM outbox WHERE id = :id AND status = 'pending'", {"id": job_id}
        )
        noted = None if row is None else self.dialect.read_json(row["result"])
        applied = noted.get(APPLIED) if isinstance(noted, dict) else None
        return applied if isinstance(applied, dict) else None

    def pending_lanes(self, lanes: Sequence[str]) -> set[str]:
        if not lanes:
            return set()
        rows = self.execute(
            "SELECT DISTINCT lane FROM outbox WHERE status = 'pending'"
            f" AND {self.dialect.one_of('lane', 'lanes')}",
            {"lanes": self.dialect.values(list(lanes))},
        ).fetchall()
        return {row["lane"] for row in rows}

    def job_ids(self, event_id: str) -> list[int]:
        rows = self.execute(
            "SELECT id FROM outbox WHERE event_id = :event ORDER BY id", {"event": event_id}
        ).fetchall()
        return [row["id"] for row in rows]

    def job_place(self, job_id: int) -> tuple[int, int] | None:
        row = self._one(
            "SELECT j.attempts, (SELECT COUNT(*) FROM outbox k WHERE k.event_id = j.event_id"
            " AND k.id < j.id) AS place FROM outbox j WHERE j.id = :id",
            {"id": job_id},
        )
        return None if row is None else (int(row["place"]), int(row["attempts"]))

    def note_applied_change(self, job_id: int, applied: dict[str, Any]) -> None:
        # in the job's own result column: the outcome replaces it, and what scrubs a job's
        # result of a client's data (rulekit forget, retention) scrubs the note alike
        self.execute(
            "UPDATE outbox SET result = :note WHERE id = :id AND status = 'pending'",
            {"note": self.dialect.json({APPLIED: applied}), "id": job_id},
        )

    def cancel_call(self, job_id: int, owner: str) -> bool:
        return bool(
            self.execute(
                "UPDATE outbox SET call_started_at = NULL, call_started_by = NULL"
                " WHERE id = :id AND status = 'pending' AND call_started_by = :owner",
                {"id": job_id, "owner": owner},
            ).rowcount
        )

    def renew_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        until = self.dialect.time(utc(now) + timedelta(seconds=lease))
        return bool(
            self.execute(
                "UPDATE outbox SET claimed_until = :until WHERE id = :id AND status = 'pending'"
                " AND claimed_by = :owner AND call_started_by = :owner",
                {"until": until, "id": job_id, "owner": owner},
            ).rowcount
        )

    def record_attempt(
        self,
        job_id: int,
        outcome: Outcome,
        *,
        error: str | None = None,
        result: Any = None,
        retry_at: datetime | None = None,
        hold: float | None = None,
        now: datetime | None = None,
        owner: str | None = None,
        seen: tuple[str, Sequence[str]] | None = None,
    ) -> bool:
        check_attempt(outcome, retry_at)
        time = self.dialect.time
        result_json = self.dialect.json(result)
        until = None
        if outcome == "retry" and hold is not None and retry_at is not None:
            until = time(utc(retry_at) + timedelta(seconds=hold))
        # the usual case first: a pending job takes the outcome (unless another claimer has
        # started its call since: taken over); a job already done or dead keeps its status
        # and only counts the attempt
        updated = self.execute(
            "UPDATE outbox SET status = :status, attempts = attempts + 1,"
            " next_attempt_at = COALESCE(:retry_at, next_attempt_at),"
            " last_error = COALESCE(:error, last_error), result = :result,"
            " claimed_by = CASE WHEN :until IS NULL THEN NULL ELSE claimed_by END,"
            " claimed_until = :until, call_started_at = NULL, call_started_by = NULL"
            " WHERE id = :id AND status = 'pending' AND (CAST(:owner AS TEXT) IS NULL"
            "  OR call_started_by IS NULL OR call_started_by = :owner)",
            {
                "owner": owner,
                "status": "pending" if outcome == "retry" else outcome,
                "retry_at": time(retry_at),
                "error": error,
                "result": result_json,
                "until": until,
                "id": job_id,
            },
        )
        if updated.rowcount == 0:
            # stopped by an erasure while its call was under way: what the service answered,
            # and the events its action emitted, may quote the client as they were before
            if self.execute(
                "UPDATE outbox SET call_started_at = NULL, call_started_by = NULL"
                f" WHERE id = :id AND status <> 'pending' AND {ERASED_JOB}",
                {"id": job_id, **ERASURE_PARAMS},
            ).rowcount:
                return False
            counted = self.execute(
                "UPDATE outbox SET attempts = attempts + 1, call_started_at = NULL,"
                " call_started_by = NULL WHERE id = :id AND status <> 'pending'",
                {"id": job_id},
            )
            if counted.rowcount == 0 and self._one(
                "SELECT 1 AS found FROM outbox WHERE id = :id", {"id": job_id}
            ):
                return False  # taken over: pending, another claimer's call under way
            if counted.rowcount == 0:
                raise KeyError(f"no job {job_id}")
        self.execute(
            "INSERT INTO attempts (job_id, at, outcome, error, result)"
            " VALUES (:id, :now, :outcome, :error, :result)",
            {
                "id": job_id,
                "now": time(utc(now)),
                "outcome": outcome,
                "error": error,
                "result": result_json,
            },
        )
        if seen is not None:
            self.mark_messages_seen(*seen)
        return True

    def pending_params(self, lane: str, action: str) -> list[Any]:
        rows = self.execute(
            "SELECT params FROM outbox WHERE lane = :lane AND status = 'pending'"
            " AND action = :action ORDER BY id",
            {"lane": lane, "action": action},
        )
        return [self.dialect.read_json(row["params"]) for row in rows]

    def tally_own_events(self, root: str, count: int) -> int | None:
        row = self._one(
            "UPDATE events SET own_events = own_events + :count WHERE event_id = :root"
            " RETURNING own_events",
            {"count": count, "root": root},
        )
        return None if row is None else int(row["own_events"])

    def requeue_job(
        self, job_id: int, *, now: datetime | None = None, only_from: JobStatus | None = None
    ) -> bool:
        cursor = self.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = :now,"
            " claimed_by = NULL, claimed_until = NULL"
            " WHERE id = :id AND (CAST(:status AS TEXT) IS NULL OR status = :status)",
            {"now": self.dialect.time(utc(now)), "id": job_id, "status": only_from},
        )
        if cursor.rowcount == 0 and not self._job_exists(job_id):
            raise KeyError(f"no job {job_id}")
        return bool(cursor.rowcount)

    def _job_exists(self, job_id: int) -> bool:
        return (
            self.execute("SELECT 1 FROM outbox WHERE id = :id", {"id": job_id}).fetchone()
            is not None
        )

    def release_claims(self, owner: str) -> int:
        released = 0
        for table in ("inbox", "outbox"):
            cursor = self.execute(
                f"UPDATE {table} SET claimed_by = NULL, claimed_until = NULL"
                " WHERE claimed_by = :owner AND status = 'pending'",
                {"owner": owner},
            )
            released += cursor.rowcount
        return released

    # leases --------------------------------------------------------------------------------
    def hold_lease(
        self, name: str, owner: str, seconds: float, *, now: datetime | None = None
    ) -> bool:
        now = utc(now)
        # The upsert takes the row lock: of two processes taking one lease at once, one wins.
        row = self._one(
            "INSERT INTO leases (name, owner, until) VALUES (:name, :owner, :until)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
            " WHERE leases.owner = excluded.owner OR leases.until <= :now"
            " RETURNING owner",
            {
                "name": name,
                "owner": owner,
                "until": self.dialect.time(now + timedelta(seconds=seconds)),
                "now": self.dialect.time(now),
            },
        )
        return row is not None

    def release_lease(self, name: str, owner: str) -> None:
        self.execute(
            "DELETE FROM leases WHERE name = :name AND owner = :owner",
            {"name": name, "owner": owner},
        )


def _touch_row(event: Event, at: str) -> dict[str, Any]:
    """The parameters of :data:`~rulekit.store.sql.listing.TOUCH` for a recorded event."""
    return {
        "now": at,
        "client": event.client.id,
        "conversation": event.conversation.id,
        "channel": event.channel,
    }
