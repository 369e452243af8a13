"""What several daemons on one PostgreSQL database need on top of
:class:`~rulekit.store.sql.state.SQLState` (the dialect is
:mod:`rulekit.store.sql.postgres_dialect`):

* claims take rows with ``FOR UPDATE SKIP LOCKED``: concurrent claimers never wait for each
  other and never get the same row; a lease (``claimed_until``) hands the work of a dead daemon
  to the others when it runs out;
* writes that are several statements on SQLite are one here (a data-modifying ``WITH``), so
  each method is one round trip;
* per-destination pacing is agreed in the database (:mod:`rulekit.store.sql.pacing`).

When a claim passes no ``now``, the database's clock is used, so daemons on machines whose
clocks drift still agree on when a lease ends.

psycopg is imported only when a PostgreSQL store is used (the ``postgres`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from rulekit.event import Conversation
from rulekit.store.records import (
    INTERRUPTED,
    CallStart,
    InboxItem,
    Job,
    JobStatus,
    Outcome,
    Timer,
    check_attempt,
    utc,
)
from rulekit.store.sql.audit import PostgresAudit
from rulekit.store.sql.lookups import PostgresLookups
from rulekit.store.sql.outbox import ERASED_JOB, ERASURE_PARAMS
from rulekit.store.sql.pacing import PostgresPacing
from rulekit.store.sql.postgres_dialect import POSTGRES
from rulekit.store.sql.presence import PostgresPresence
from rulekit.store.sql.sessions import PostgresConsoleSessions
from rulekit.store.sql.state import SQLState
from rulekit.store.sql.timers import TIMER_COLUMNS

# The advisory lock that serializes job claims across daemons (a constant every rulekit agrees
# on: "jobs").
_CLAIM_LOCK = 0x6A6F6273
_ASSIGN_LOCK = 0x61736E67
_LOCK = "SELECT pg_advisory_xact_lock(:lock)"
"""Held until the transaction ends (claims of jobs, picks of agents: one daemon at a time)."""

_OWN_WAIT = 8.0
"""Seconds a daemon that handed a job or timer back (:meth:`PostgresState.hand_back_job`,
:meth:`PostgresState.hand_back_timer`) leaves it to the others after they may claim it, before
it claims it again itself."""

# The claim's clock: the caller's ``now`` (tests), else the database's.
_NOW = "COALESCE(:now::timestamptz, now())"

# The job claim is planned with sorts off (its lock's statement turns them off for the
# transaction, the claim turns them back as they were when it runs): the only plan left reads
# the due index in order and stops at the limit. Without statistics on ``outbox`` (a table
# autovacuum has not analysed yet, e.g. just after one webhook filled a lane with thousands of
# jobs) the planner guesses that one job is due, and its cheapest plan was to check every due
# job's lane, then sort them: each check reads the lane, so a lane of n jobs cost n * n rows
# (9 million rows, two seconds, for 3,000 jobs) with every claimer waiting on the lock.
_CLAIM_LOCK_SORTS_OFF = (
    "SELECT pg_advisory_xact_lock(:lock) AS locked, current_setting('enable_sort') AS sort,"
    " set_config('enable_sort', 'off', true) AS planned"
)


class PostgresState(
    PostgresAudit,
    PostgresLookups,
    PostgresPresence,
    PostgresPacing,
    PostgresConsoleSessions,
    SQLState,
):
    """One open PostgreSQL transaction."""

    batches = True

    def __init__(self, conn: Any, where: str) -> None:
        super().__init__(conn, where, POSTGRES)

    # inbox -----------------------------------------------------------------------------------
    def append_inbox(
        self,
        channel: str,
        body: bytes,
        *,
        delivery_key: str | None = None,
        conversation_key: str | None = None,
        now: datetime | None = None,
    ) -> tuple[int, bool]:
        # One statement either way: the insert, or (on a redelivery) the first delivery's id.
        row = self._one(
            "WITH new AS (INSERT INTO inbox"
            " (channel, received_at, body, delivery_key, conversation_key)"
            " VALUES (:channel, :now, :body, :key, :conversation)"
            " ON CONFLICT (channel, delivery_key) DO NOTHING RETURNING id)"
            " SELECT id, true AS new FROM new"
            " UNION ALL SELECT id, false FROM inbox"
            " WHERE channel = :channel AND delivery_key = :key"
            " AND NOT EXISTS (SELECT 1 FROM new)",
            {
                "channel": channel,
                "now": utc(now),
                "body": bytes(body),
                "key": delivery_key,
                "conversation": conversation_key,
            },
        )
        if row is None:
            # A concurrent first delivery committed between our insert's check and our read
            # (READ COMMITTED): read again with a fresh snapshot.
            return self._first_delivery(channel, delivery_key), False
        return row["id"], row["new"]

    def claim_inbox(
        self,
        owner: str,
        *,
        lease: float,
        limit: int = 1,
        now: datetime | None = None,
        budget: int | None = None,
    ) -> list[InboxItem]:
        rows = self.execute(
            "WITH picked AS (SELECT i.id FROM inbox i"
            "  WHERE i.status = 'pending'"
            f"   AND (i.claimed_until IS NULL OR i.claimed_until <= {_NOW})"
            "   AND (i.conversation_key IS NULL OR NOT EXISTS ("
            "     SELECT 1 FROM inbox e WHERE e.status = 'pending' AND e.channel = i.channel"
            "       AND e.conversation_key = i.conversation_key AND e.id < i.id))"
            "  ORDER BY i.id LIMIT :limit FOR UPDATE SKIP LOCKED),"
            # (a window cannot go with FOR UPDATE: the bodies' sizes are added up apart; the
            # size of a body is in its header, read without the body)
            " within AS (SELECT head.id FROM (SELECT picked.id, length(b.body) AS size,"
            "   SUM(length(b.body)) OVER (ORDER BY picked.id ROWS UNBOUNDED PRECEDING) AS total"
            "   FROM picked JOIN inbox b ON b.id = picked.id) head"
            "  WHERE head.total <= :budget OR head.total = head.size)"
            " UPDATE inbox SET claimed_by = :owner,"
            f"  claimed_until = {_NOW} + make_interval(secs => :lease),"
            "  attempts = attempts + 1"
            # A claim's commit need not wait for the disk: a claim lost with the server is
            # an item claimable again, and the record that follows is flushed with the claim
            # (the log is flushed in order). The processor's round saves one flush.
            " FROM within, (SELECT set_config('synchronous_commit', 'off', true)) AS quick"
            " WHERE inbox.id = within.id RETURNING inbox.*",
            {
                "now": self.dialect.time(now),
                "owner": owner,
                "lease": float(lease),
                "limit": limit,
                "budget": 2**62 if budget is None else max(budget, 1),
            },
        ).fetchall()
        return sorted((self._inbox_item(row) for row in rows), key=lambda item: item.id)

    # timers ----------------------------------------------------------------------------------
    def timers_clock(self) -> datetime:
        row = self._one("SELECT clock_timestamp() AS now")
        assert row is not None
        return utc(row["now"])

    def claim_timers(
        self, owner: str, *, lease: float, limit: int = 20, now: datetime | None = None
    ) -> list[Timer]:
        # the database's clock, as the claims of inbox items and jobs: a daemon whose own
        # clock runs ahead took timers before they were due (and another daemon's claims
        # before they ran out)
        rows = self.execute(
            "UPDATE timers SET claimed_by = :owner,"
            f"  claimed_until = {_NOW} + make_interval(secs => :lease)"
            f" WHERE id IN (SELECT id FROM timers WHERE status = 'pending' AND due <= {_NOW}"
            f"   AND (claimed_until IS NULL OR claimed_until <= {_NOW})"
            # not a timer this daemon handed back a moment ago (hand_back_timer): others first
            "   AND (claimed_by IS DISTINCT FROM :owner OR claimed_until IS NULL"
            f"    OR claimed_until <= {_NOW} - make_interval(secs => :own_wait))"
            "   ORDER BY due, id LIMIT :limit FOR UPDATE SKIP LOCKED)"
            f" RETURNING {TIMER_COLUMNS}",
            {
                "owner": owner,
                "lease": float(lease),
                "now": self.dialect.time(now),
                "limit": limit,
                "own_wait": _OWN_WAIT,
            },
        ).fetchall()
        return sorted((self._timer(row) for row in rows), key=lambda t: (t.due, t.id))

    def hand_back_timer(self, timer_id: int, owner: str, *, until: datetime) -> bool:
        # still marked as ``owner``'s: its claims pass it over _OWN_WAIT seconds past ``until``,
        # and another daemon gets it first (the daemon that handed it back, polling from that
        # moment on, claimed it again first each time)
        cursor = self.execute(
            "UPDATE timers SET claimed_until = :until"
            " WHERE id = :id AND status = 'pending' AND claimed_by = :owner",
            {"id": timer_id, "owner": owner, "until": self.dialect.time(utc(until))},
        )
        return bool(cursor.rowcount == 1)

    # outbox ----------------------------------------------------------------------------------
    def hold_assignments(self) -> None:
        self.execute(_LOCK, {"lock": _ASSIGN_LOCK})

    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        # Claims are serialized across daemons (a transaction-scoped advisory lock, taken by
        # its own statement so the claim's snapshot sees every claim committed before): two
        # claimers never split one lane between them. The claim takes the due prefix of each
        # lane no other daemon holds, as SQLite does. The due jobs are read in the order of
        # the due index (outbox_due): in id order, the planner, which cannot tell that the
        # pending jobs are rarely the old ones, reads the whole table from its oldest job
        # (done ones and retries far ahead included). Should the limit cut a lane whose older
        # job is due later than a newer one, start_call hands the newer one's claim back.
        # Planned with sorts off (see _CLAIM_LOCK_SORTS_OFF); the setting is put back by the
        # claim's outer join, which reads its one row whether or not a job is claimed.
        sorts = self._one(_CLAIM_LOCK_SORTS_OFF, {"lock": _CLAIM_LOCK})
        assert sorts is not None
        rows = self.execute(
            "WITH picked AS (SELECT j.id FROM outbox j"
            f"  WHERE j.status = 'pending' AND j.next_attempt_at <= {_NOW}"
            f"   AND (j.claimed_until IS NULL OR j.claimed_until <= {_NOW})"
            # not a job this daemon handed back a moment ago (hand_back_job): the others first
            "   AND (j.claimed_until IS NOT NULL OR j.claimed_by IS DISTINCT FROM :owner"
            f"    OR j.next_attempt_at <= {_NOW} - make_interval(secs => :own_wait))"
            "   AND NOT EXISTS (SELECT 1 FROM outbox k WHERE k.lane = j.lane"
            f"    AND k.status = 'pending' AND ((k.claimed_until > {_NOW}"
            "     AND k.claimed_by <> :owner)"
            f"     OR (k.id < j.id AND k.next_attempt_at > {_NOW})))"
            "  ORDER BY j.next_attempt_at, j.id LIMIT :limit FOR UPDATE OF j SKIP LOCKED),"
            " claimed AS (UPDATE outbox SET claimed_by = :owner,"
            f"  claimed_until = {_NOW} + make_interval(secs => :lease)"
            "  FROM picked WHERE outbox.id = picked.id RETURNING outbox.*)"
            " SELECT claimed.* FROM (SELECT set_config('enable_sort', :sort, true)) AS planned"
            " LEFT JOIN claimed ON true",
            {
                "now": self.dialect.time(now),
                "owner": owner,
                "lease": float(lease),
                "limit": limit,
                "own_wait": _OWN_WAIT,
                "sort": sorts["sort"],
            },
        ).fetchall()
        jobs = (self._job(row) for row in rows if row["id"] is not None)
        return sorted(jobs, key=lambda job: job.id)

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        return self._begin_call(job_id, owner, lease, now=now).started

    def begin_call(
        self,
        job_id: int,
        owner: str,
        *,
        lease: float,
        paused: Sequence[str] = (),
        conversation: tuple[str, str] | None = None,
    ) -> CallStart:
        return self._begin_call(job_id, owner, lease, paused, conversation)

    def _begin_call(
        self,
        job_id: int,
        owner: str,
        lease: float,
        paused: Sequence[str] = (),
        conversation: tuple[str, str] | None = None,
        now: datetime | None = None,
    ) -> CallStart:
        # One statement: read the pauses and lock the job; unless paused, it may start when we
        # hold its claim and no older job of its lane is pending, else hand the claim back if
        # ours. A call another claimer started and never finished counts as an (interrupted)
        # attempt. The conversation is read in the same statement.
        row = self._one(
            "WITH pause AS (SELECT COALESCE(max(extract(epoch FROM"
            "  next_at - clock_timestamp())), 0) AS wait"
            "  FROM pacing WHERE key = ANY(:keys::text[])),"
            " old AS (SELECT id, lane, claimed_by, call_started_by, status FROM outbox"
            "  WHERE id = :id FOR UPDATE),"
            " verdict AS (SELECT old.*, (old.status = 'pending' AND old.claimed_by = :owner"
            "   AND (SELECT wait FROM pause) <= 0) AS mine,"
            "  NOT EXISTS (SELECT 1 FROM outbox k, old o2 WHERE k.lane = o2.lane"
            "   AND k.status = 'pending' AND k.id < o2.id) AS first FROM old),"
            " upd AS (UPDATE outbox o SET"
            f"  call_started_at = CASE WHEN v.first THEN {_NOW} ELSE o.call_started_at END,"
            "  call_started_by = CASE WHEN v.first THEN :owner ELSE o.call_started_by END,"
            f"  claimed_until = CASE WHEN v.first THEN {_NOW} + make_interval(secs => :lease)"
            "   ELSE NULL END,"
            "  claimed_by = CASE WHEN v.first THEN o.claimed_by ELSE NULL END,"
            "  attempts = o.attempts + CASE WHEN v.first AND v.call_started_by IS NOT NULL"
            "   AND v.call_started_by <> :owner THEN 1 ELSE 0 END"
            "  FROM verdict v WHERE o.id = v.id AND v.mine RETURNING v.first,"
            "   (v.first AND v.call_started_by IS NOT NULL AND v.call_started_by <> :owner)"
            "   AS interrupted),"
            " log AS (INSERT INTO attempts (job_id, at, outcome, error)"
            f"  SELECT :id, {_NOW}, 'retry', :error FROM upd WHERE upd.interrupted)"
            " SELECT (SELECT count(*) FROM old) AS found,"
            "  COALESCE((SELECT first FROM upd), false) AS started,"
            "  (SELECT wait FROM pause) AS wait,"
            "  (SELECT data FROM conversations WHERE id = :conversation AND channel = :channel"
            "   LIMIT 1) AS conversation",
            {
                "id": job_id,
                "owner": owner,
                "lease": float(lease),
                "now": self.dialect.time(now),
                "error": INTERRUPTED,
                "keys": list(paused),
                "channel": conversation[0] if conversation else None,
                "conversation": conversation[1] if conversation else None,
            },
        )
        assert row is not None
        if not row["found"]:
            raise KeyError(f"no job {job_id}")
        if not row["started"]:
            return CallStart(False, max(float(row["wait"]), 0.0))
        data = row["conversation"]
        return CallStart(True, 0.0, Conversation.model_validate_json(data) if data else None)

    def renew_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        # the database's clock, as claims use it
        return bool(
            self.execute(
                f"UPDATE outbox SET claimed_until = {_NOW} + make_interval(secs => :lease)"
                " WHERE id = :id AND status = 'pending' AND claimed_by = :owner"
                " AND call_started_by = :owner",
                {
                    "now": self.dialect.time(now),
                    "lease": float(lease),
                    "id": job_id,
                    "owner": owner,
                },
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
        held = outcome == "retry" and hold is not None
        # One statement: lock the job, update it (a job already done or dead keeps its status
        # and only counts the attempt; a pending one whose call another claimer started since
        # is left alone: taken over), and log the attempt. Without ``now``, ``retry_at`` (on
        # this machine's clock) is moved to the database's clock, which claims go by: as far
        # ahead of the database's now as it is of this machine's.
        row = self._one(
            "WITH shift AS (SELECT CASE WHEN CAST(:local AS timestamptz) IS NULL"
            "  THEN interval '0' ELSE clock_timestamp() - :local::timestamptz END AS by),"
            " old AS (SELECT id, status, (CAST(:owner AS text) IS NOT NULL"
            "  AND status = 'pending' AND call_started_by <> :owner) AS taken"
            "  FROM outbox WHERE id = :id FOR UPDATE),"
            " upd AS (UPDATE outbox o SET attempts = o.attempts + CASE"
            f"  WHEN old.status <> 'pending' AND o.{ERASED_JOB} THEN 0 ELSE 1 END,"
            "  status = CASE WHEN old.status = 'pending' THEN :status ELSE o.status END,"
            "  next_attempt_at = CASE WHEN old.status = 'pending'"
            "   THEN COALESCE(:retry_at::timestamptz + (SELECT by FROM shift),"
            "    o.next_attempt_at)"
            "   ELSE o.next_attempt_at END,"
            "  last_error = CASE WHEN old.status = 'pending'"
            "   THEN COALESCE(:error::text, o.last_error) ELSE o.last_error END,"
            "  result = CASE WHEN old.status = 'pending' THEN :result::json"
            "   ELSE o.result END,"
            "  claimed_by = CASE WHEN old.status = 'pending' AND NOT :held THEN NULL"
            "   ELSE o.claimed_by END,"
            "  claimed_until = CASE WHEN old.status <> 'pending' THEN o.claimed_until"
            "   WHEN :held THEN :retry_at::timestamptz + (SELECT by FROM shift)"
            "    + make_interval(secs => :hold)"
            "   ELSE NULL END,"
            "  call_started_at = NULL, call_started_by = NULL"
            "  FROM old WHERE o.id = old.id AND old.taken IS NOT TRUE"
            "  RETURNING o.id, old.status <> 'pending'"
            f"   AND o.{ERASED_JOB} AS erased),"
            # a job an erasure stopped while its call was under way: nothing is recorded (what
            # the service answered, and the events its action emitted, may quote the client as
            # they were before), only its call ended
            " ins AS (INSERT INTO attempts (job_id, at, outcome, error, result)"
            "  SELECT id, :at, :outcome, :error, :result::json FROM upd"
            "  WHERE erased IS NOT TRUE RETURNING job_id),"
            # the messages the call created, seen once it is recorded (no round trip more)
            " seen AS (INSERT INTO seen_messages (channel, message_id, seen_at)"
            "  SELECT DISTINCT :seen_channel::text, m, :at FROM ins,"
            "  unnest(:seen_ids::text[]) AS m ON CONFLICT DO NOTHING)"
            " SELECT (SELECT count(*) FROM old) AS found, (SELECT count(*) FROM ins) AS recorded",
            {
                "owner": owner,
                "id": job_id,
                "status": "pending" if outcome == "retry" else outcome,
                "retry_at": self.dialect.time(retry_at),
                "local": utc() if now is None and retry_at is not None else None,
                "error": error,
                "result": self.dialect.json(result),
                "at": utc(now),
                "outcome": outcome,
                "held": held,
                "hold": float(hold or 0.0),
                "seen_channel": seen[0] if seen is not None else None,
                "seen_ids": list(seen[1]) if seen is not None else [],
                **ERASURE_PARAMS,
            },
        )
        assert row is not None
        if not row["found"]:
            raise KeyError(f"no job {job_id}")
        return bool(row["recorded"])

    def requeue_job(
        self, job_id: int, *, now: datetime | None = None, only_from: JobStatus | None = None
    ) -> bool:
        cursor = self.execute(
            f"UPDATE outbox SET status = 'pending', next_attempt_at = {_NOW},"
            " claimed_by = NULL, claimed_until = NULL"
            " WHERE id = :id AND (CAST(:status AS TEXT) IS NULL OR status = :status)",
            {"now": self.dialect.time(now), "id": job_id, "status": only_from},
        )
        if cursor.rowcount == 0 and not self._job_exists(job_id):
            raise KeyError(f"no job {job_id}")
        return bool(cursor.rowcount)

    def hand_back_job(self, job_id: int, owner: str, *, wait: float, within: float) -> bool:
        # the job stays marked as ``owner``'s (a claim without an end, which is no claim): its
        # claims pass it over for _OWN_WAIT seconds more, and another daemon gets it first (a
        # daemon that handed a job back claimed it again each time first, as it was waiting
        # for that very moment, and kept an upgraded daemon from it for half a minute)
        cursor = self.execute(
            "UPDATE outbox SET claimed_until = NULL, call_started_at = NULL,"
            "  call_started_by = NULL, next_attempt_at = now() + make_interval(secs => :wait)"
            " WHERE id = :id AND status = 'pending' AND claimed_by = :owner AND EXISTS ("
            "  SELECT 1 FROM events e WHERE e.event_id = outbox.event_id"
            "   AND e.processed_at > now() - make_interval(secs => :within))",
            {"id": job_id, "owner": owner, "wait": float(wait), "within": float(within)},
        )
        return bool(cursor.rowcount == 1)

    def hold_lease(
        self, name: str, owner: str, seconds: float, *, now: datetime | None = None
    ) -> bool:
        # the database's clock, as claims: a daemon whose clock ran ahead took the lease of
        # another daemon's fetcher before it ran out (two fetchers of one account)
        row = self._one(
            "INSERT INTO leases (name, owner, until)"
            f" VALUES (:name, :owner, {_NOW} + make_interval(secs => :seconds))"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
            f" WHERE leases.owner = excluded.owner OR leases.until <= {_NOW}"
            " RETURNING owner",
            {
                "name": name,
                "owner": owner,
                "seconds": float(seconds),
                "now": self.dialect.time(now),
            },
        )
        return row is not None

    def release_claims(self, owner: str) -> int:
        row = self._one(
            "WITH i AS (UPDATE inbox SET claimed_by = NULL, claimed_until = NULL"
            "  WHERE claimed_by = :owner AND status = 'pending' RETURNING 1),"
            " o AS (UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
            "  WHERE claimed_by = :owner AND status = 'pending' RETURNING 1)"
            " SELECT (SELECT count(*) FROM i) + (SELECT count(*) FROM o) AS released",
            {"owner": owner},
        )
        assert row is not None
        return int(row["released"])
