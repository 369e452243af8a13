"""The SQL behind one PostgreSQL transaction: conversation state and the journal.

:class:`PostgresState` is what :meth:`PostgresStore.transaction` yields; it is only valid inside
the ``with`` block. It follows :mod:`rulekit.store.sqlite_state` statement for statement, with
what several daemons on one database need on top:

* claims take rows with ``FOR UPDATE SKIP LOCKED``: concurrent claimers never wait for each
  other and never get the same row; a lease (``claimed_until``) hands the work of a dead daemon
  to the others when it runs out;
* an inbox item whose conversation has an older pending item is not claimable, so the events
  of one conversation are processed in order whichever daemon takes them;
* counters and guards are single upserts (``INSERT … ON CONFLICT … RETURNING``): atomic across
  processes without a lock of our own.

When a claim passes no ``now``, the database's clock is used, so daemons on machines whose
clocks drift still agree on when a lease ends. Each method is one statement (one round trip).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rulekit.errors import StoreConflict, StoreError, StoreUnavailable
from rulekit.event import Client, Conversation, Event
from rulekit.store import postgres_privacy
from rulekit.store.base import JournaledState
from rulekit.store.codec import to_json
from rulekit.store.records import (
    INTERRUPTED,
    Attempt,
    EventRecord,
    InboxItem,
    InboxStatus,
    Job,
    JobSpec,
    JobStatus,
    Outcome,
    check_attempt,
    utc,
)

if TYPE_CHECKING:
    import psycopg

# SQLSTATE classes that mean "the database cannot do this right now", not a bug: connection
# exceptions, rollbacks (deadlock, serialization), insufficient resources (disk full, too many
# connections), operator intervention (shutdown), system errors (I/O).
_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58")
_UNAVAILABLE_STATES = frozenset({"25006"})  # read_only_sql_transaction (a hot standby)
_CONFLICT_STATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected


def unavailable_error(where: str, exc: Exception) -> StoreUnavailable | None:
    """A :class:`StoreUnavailable` for ``exc`` when it means the database cannot be used right
    now (unreachable, shut down, disk full, read-only); ``None`` for anything else (a bug)."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or (
        state is not None and (state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES)
    ):
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if state in _CONFLICT_STATES:
            return StoreConflict(f"PostgreSQL store {where}: a conflict: {detail}")
        return StoreUnavailable(f"PostgreSQL store {where} cannot be used: {detail}")
    return None


def _inbox_item(row: dict[str, Any]) -> InboxItem:
    return InboxItem(
        id=row["id"],
        channel=row["channel"],
        received_at=utc(row["received_at"]),
        body=bytes(row["body"]),
        delivery_key=row["delivery_key"],
        status=row["status"],
        attempts=row["attempts"],
        error=row["error"],
        claimed_by=row["claimed_by"],
        claimed_until=_utc_or_none(row["claimed_until"]),
        conversation_key=row["conversation_key"],
    )


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


def _job(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"],
        event_id=row["event_id"],
        rule=row["rule"],
        action=row["action"],
        params=row["params"],
        destination=row["destination"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=utc(row["next_attempt_at"]),
        last_error=row["last_error"],
        result=row["result"],
        claimed_by=row["claimed_by"],
        claimed_until=_utc_or_none(row["claimed_until"]),
        lane=row["lane"],
        call_started_at=_utc_or_none(row["call_started_at"]),
        call_started_by=row["call_started_by"],
    )


def _event_record(row: dict[str, Any]) -> EventRecord:
    return EventRecord(
        event_id=row["event_id"],
        inbox_id=row["inbox_id"],
        channel=row["channel"],
        event=row["event"],
        conversation_id=row["conversation_id"],
        occurred_at=utc(row["occurred_at"]),
        processed_at=utc(row["processed_at"]),
        data=row["data"],
        trace=row["trace"],
    )


# The advisory lock that serializes job claims across daemons (a constant every rulekit agrees
# on: "jobs").
_CLAIM_LOCK = 0x6A6F6273

# The claim's clock: the caller's ``now`` (tests), else the database's.
_NOW = "COALESCE(%(now)s::timestamptz, now())"


class PostgresState(JournaledState):
    """One open PostgreSQL transaction."""

    def __init__(self, conn: psycopg.Connection[dict[str, Any]], where: str) -> None:
        self.conn = conn
        self.where = where
        self.active = True
        self.statements = 0
        """Statements run (each one round trip to the server), for benchmarks."""

    def execute(self, sql: str, params: Any = None) -> psycopg.Cursor[dict[str, Any]]:
        """Run one statement, turning "cannot persist" errors into StoreUnavailable."""
        import psycopg

        if not self.active:
            raise StoreError("this transaction has ended; use the state only inside its block")
        self.statements += 1
        try:
            return self.conn.execute(sql, params)
        except psycopg.Error as exc:
            unavailable = unavailable_error(self.where, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _one(self, sql: str, params: Any = None) -> dict[str, Any] | None:
        return self.execute(sql, params).fetchone()

    # conversations ---------------------------------------------------------------------------
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        row = self._one(
            "SELECT data FROM conversations WHERE channel = %s AND key = %s", (channel, key)
        )
        return Conversation.model_validate_json(row["data"]) if row else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self.execute(
            "INSERT INTO conversations (channel, key, id, status, assignee, data, updated_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, now())"
            " ON CONFLICT (channel, key) DO UPDATE SET id = excluded.id,"
            " status = excluded.status, assignee = excluded.assignee, data = excluded.data,"
            " updated_at = excluded.updated_at",
            (
                channel,
                key,
                conversation.id,
                conversation.status,
                conversation.assignee.lower() if conversation.assignee else None,
                conversation.model_dump_json(),
            ),
        )

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        row = self._one(
            "SELECT key, data FROM conversations WHERE id = %s AND channel = %s LIMIT 1",
            (conversation_id, channel),
        )
        return (row["key"], Conversation.model_validate_json(row["data"])) if row else None

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        rows = self.execute(
            "SELECT assignee, COUNT(*) AS n FROM conversations"
            " WHERE status = 'open' AND assignee IS NOT NULL"
            " AND (%(channel)s::text IS NULL OR channel = %(channel)s) GROUP BY assignee",
            {"channel": channel},
        )
        return {row["assignee"]: row["n"] for row in rows}

    # clients ---------------------------------------------------------------------------------
    def get_client(self, channel: str, client_id: str) -> Client | None:
        row = self._one(
            "SELECT data FROM clients WHERE channel = %s AND id = %s", (channel, client_id)
        )
        return Client.model_validate_json(row["data"]) if row else None

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.execute(
            "INSERT INTO clients (channel, id, data, updated_at) VALUES (%s, %s, %s, now())"
            " ON CONFLICT (channel, id) DO UPDATE SET data = excluded.data,"
            " updated_at = excluded.updated_at",
            (channel, client.id, client.model_dump_json()),
        )

    # messages --------------------------------------------------------------------------------
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "INSERT INTO seen_messages (channel, message_id, seen_at) VALUES (%s, %s, now())"
            " ON CONFLICT DO NOTHING RETURNING 1 AS new",
            (channel, message_id),
        )
        return row is not None

    def message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "SELECT 1 AS seen FROM seen_messages WHERE channel = %s AND message_id = %s",
            (channel, message_id),
        )
        return row is not None

    # rule guards -----------------------------------------------------------------------------
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        row = self._one(
            "SELECT until FROM cooldowns WHERE rule = %s AND conversation_id = %s",
            (rule, conversation_id),
        )
        return utc(row["until"]) if row else None

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        rows = self.execute(
            "SELECT rule, until FROM cooldowns WHERE conversation_id = %s", (conversation_id,)
        ).fetchall()
        return {row["rule"]: utc(row["until"]) for row in rows}

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.execute(
            "INSERT INTO cooldowns (rule, conversation_id, until) VALUES (%s, %s, %s)"
            " ON CONFLICT (rule, conversation_id) DO UPDATE SET until = excluded.until",
            (rule, conversation_id, utc(until)),
        )

    def next_position(self, key: str, modulo: int) -> int:
        # The upsert takes the row lock: two daemons advancing one counter are serialized by
        # PostgreSQL and each gets its own value.
        row = self._one(
            "INSERT INTO positions (key, value) VALUES (%s, 1)"
            " ON CONFLICT (key) DO UPDATE SET value = positions.value + 1"
            " RETURNING value - 1 AS previous",
            (key,),
        )
        assert row is not None
        return row["previous"] % modulo if modulo > 0 else 0

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
            " VALUES (%(channel)s, %(now)s, %(body)s, %(key)s, %(conversation)s)"
            " ON CONFLICT (channel, delivery_key) DO NOTHING RETURNING id)"
            " SELECT id, true AS new FROM new"
            " UNION ALL SELECT id, false FROM inbox"
            " WHERE channel = %(channel)s AND delivery_key = %(key)s"
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
            row = self._one(
                "SELECT id, false AS new FROM inbox WHERE channel = %s AND delivery_key = %s",
                (channel, delivery_key),
            )
        assert row is not None
        return row["id"], row["new"]

    def claim_inbox(
        self, owner: str, *, lease: float, limit: int = 1, now: datetime | None = None
    ) -> list[InboxItem]:
        rows = self.execute(
            "WITH picked AS (SELECT i.id FROM inbox i"
            "  WHERE i.status = 'pending'"
            f"   AND (i.claimed_until IS NULL OR i.claimed_until <= {_NOW})"
            "   AND (i.conversation_key IS NULL OR NOT EXISTS ("
            "     SELECT 1 FROM inbox e WHERE e.status = 'pending' AND e.channel = i.channel"
            "       AND e.conversation_key = i.conversation_key AND e.id < i.id))"
            "  ORDER BY i.id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            f" UPDATE inbox SET claimed_by = %(owner)s,"
            f"  claimed_until = {_NOW} + make_interval(secs => %(lease)s),"
            "  attempts = attempts + 1"
            " FROM picked WHERE inbox.id = picked.id RETURNING inbox.*",
            {"now": _utc_or_none(now), "owner": owner, "lease": float(lease), "limit": limit},
        ).fetchall()
        return sorted((_inbox_item(row) for row in rows), key=lambda item: item.id)

    def finish_inbox(self, inbox_id: int, *, error: str | None = None) -> None:
        self._update_inbox(inbox_id, "done" if error is None else "failed", error)

    def requeue_inbox(self, inbox_id: int) -> None:
        self._update_inbox(inbox_id, "pending", None)

    def _update_inbox(self, inbox_id: int, status: InboxStatus, error: str | None) -> None:
        cursor = self.execute(
            "UPDATE inbox SET status = %s, error = %s, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = %s",
            (status, error, inbox_id),
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no inbox item {inbox_id}")

    def inbox_items(
        self, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]:
        rows = self.execute(
            "SELECT * FROM inbox WHERE (%(status)s::text IS NULL OR status = %(status)s)"
            " ORDER BY id DESC LIMIT %(limit)s",
            {"status": status, "limit": limit},
        )
        return [_inbox_item(row) for row in rows]

    # audit trail and outbox ------------------------------------------------------------------
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
            "  VALUES (%(id)s, %(inbox)s, %(channel)s, %(event)s, %(conversation)s,"
            "   %(occurred)s, %(data)s::json, %(trace)s::json, %(now)s)"
            "  ON CONFLICT (event_id) DO NOTHING RETURNING event_id),"
            " j AS (INSERT INTO outbox (event_id, rule, action, params, destination,"
            "  lane, next_attempt_at)"
            "  SELECT e.event_id, s.rule, s.action, s.params::json, s.destination, s.lane,"
            "   %(now)s"
            "  FROM e, unnest(%(rules)s::text[], %(actions)s::text[], %(params)s::text[],"
            "   %(destinations)s::text[], %(lanes)s::text[]) WITH ORDINALITY"
            "   AS s(rule, action, params, destination, lane, n)"
            "  ORDER BY s.n RETURNING 1)"
            " SELECT (SELECT count(*) FROM e) AS recorded, (SELECT count(*) FROM j) AS jobs",
            {
                "id": event.id,
                "inbox": inbox_id,
                "channel": event.channel,
                "event": event.event,
                "conversation": event.conversation.id,
                "occurred": utc(event.occurred_at),
                "data": to_json(event.public()),
                "trace": to_json(dict(trace)),
                "now": utc(now),
                "rules": [job.rule for job in jobs],
                "actions": [job.action for job in jobs],
                "params": [to_json(job.params) for job in jobs],
                "destinations": [job.destination for job in jobs],
                "lanes": [job.lane or job.destination for job in jobs],
            },
        )
        assert row is not None
        return bool(row["recorded"])

    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        # Claims are serialized across daemons (a transaction-scoped advisory lock, taken by
        # its own statement so the claim's snapshot sees every claim committed before): two
        # claimers never split one lane between them. The claim takes the due prefix of each
        # lane no other daemon holds, as SQLite does.
        self.execute("SELECT pg_advisory_xact_lock(%s)", (_CLAIM_LOCK,))
        rows = self.execute(
            "WITH picked AS (SELECT j.id FROM outbox j"
            f"  WHERE j.status = 'pending' AND j.next_attempt_at <= {_NOW}"
            f"   AND (j.claimed_until IS NULL OR j.claimed_until <= {_NOW})"
            "   AND NOT EXISTS (SELECT 1 FROM outbox k WHERE k.lane = j.lane"
            f"    AND k.status = 'pending' AND ((k.claimed_until > {_NOW}"
            "     AND k.claimed_by <> %(owner)s)"
            f"     OR (k.id < j.id AND k.next_attempt_at > {_NOW})))"
            "  ORDER BY j.id LIMIT %(limit)s FOR UPDATE OF j SKIP LOCKED)"
            " UPDATE outbox SET claimed_by = %(owner)s,"
            f"  claimed_until = {_NOW} + make_interval(secs => %(lease)s)"
            " FROM picked WHERE outbox.id = picked.id RETURNING outbox.*",
            {"now": _utc_or_none(now), "owner": owner, "lease": float(lease), "limit": limit},
        ).fetchall()
        return sorted((_job(row) for row in rows), key=lambda job: job.id)

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        # One statement: lock the job; it may start when we hold its claim and no older job of
        # its lane is pending; else hand the claim back if ours. A call another claimer
        # started and never finished counts as an (interrupted) attempt.
        row = self._one(
            "WITH old AS (SELECT id, lane, claimed_by, call_started_by, status FROM outbox"
            "  WHERE id = %(id)s FOR UPDATE),"
            " verdict AS (SELECT old.*, (old.status = 'pending' AND old.claimed_by = %(owner)s)"
            "   AS mine, NOT EXISTS (SELECT 1 FROM outbox k, old o2 WHERE k.lane = o2.lane"
            "   AND k.status = 'pending' AND k.id < o2.id) AS first FROM old),"
            " upd AS (UPDATE outbox o SET"
            f"  call_started_at = CASE WHEN v.first THEN {_NOW} ELSE o.call_started_at END,"
            "  call_started_by = CASE WHEN v.first THEN %(owner)s ELSE o.call_started_by END,"
            f"  claimed_until = CASE WHEN v.first THEN {_NOW} + make_interval(secs => %(lease)s)"
            "   ELSE NULL END,"
            "  claimed_by = CASE WHEN v.first THEN o.claimed_by ELSE NULL END,"
            "  attempts = o.attempts + CASE WHEN v.first AND v.call_started_by IS NOT NULL"
            "   AND v.call_started_by <> %(owner)s THEN 1 ELSE 0 END"
            "  FROM verdict v WHERE o.id = v.id AND v.mine RETURNING v.first,"
            "   (v.first AND v.call_started_by IS NOT NULL AND v.call_started_by <> %(owner)s)"
            "   AS interrupted),"
            " log AS (INSERT INTO attempts (job_id, at, outcome, error)"
            f"  SELECT %(id)s, {_NOW}, 'retry', %(error)s FROM upd WHERE upd.interrupted)"
            " SELECT (SELECT count(*) FROM old) AS found,"
            "  COALESCE((SELECT first FROM upd), false) AS started",
            {
                "id": job_id,
                "owner": owner,
                "lease": float(lease),
                "now": _utc_or_none(now),
                "error": INTERRUPTED,
            },
        )
        assert row is not None
        if not row["found"]:
            raise KeyError(f"no job {job_id}")
        return bool(row["started"])

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
    ) -> None:
        check_attempt(outcome, retry_at)
        held = outcome == "retry" and hold is not None
        # One statement: lock the job, update it (a job already done or dead keeps its status
        # and only counts the attempt), and log the attempt.
        row = self._one(
            "WITH old AS (SELECT id, status FROM outbox WHERE id = %(id)s FOR UPDATE),"
            " upd AS (UPDATE outbox o SET attempts = o.attempts + 1,"
            "  status = CASE WHEN old.status = 'pending' THEN %(status)s ELSE o.status END,"
            "  next_attempt_at = CASE WHEN old.status = 'pending'"
            "   THEN COALESCE(%(retry_at)s::timestamptz, o.next_attempt_at)"
            "   ELSE o.next_attempt_at END,"
            "  last_error = CASE WHEN old.status = 'pending'"
            "   THEN COALESCE(%(error)s::text, o.last_error) ELSE o.last_error END,"
            "  result = CASE WHEN old.status = 'pending' THEN %(result)s::json"
            "   ELSE o.result END,"
            "  claimed_by = CASE WHEN old.status = 'pending' AND NOT %(held)s THEN NULL"
            "   ELSE o.claimed_by END,"
            "  claimed_until = CASE WHEN old.status <> 'pending' THEN o.claimed_until"
            "   WHEN %(held)s THEN %(retry_at)s::timestamptz + make_interval(secs => %(hold)s)"
            "   ELSE NULL END,"
            "  call_started_at = NULL, call_started_by = NULL"
            "  FROM old WHERE o.id = old.id RETURNING o.id)"
            " INSERT INTO attempts (job_id, at, outcome, error, result)"
            " SELECT id, %(at)s, %(outcome)s, %(error)s, %(result)s::json FROM upd"
            " RETURNING job_id",
            {
                "id": job_id,
                "status": "pending" if outcome == "retry" else outcome,
                "retry_at": _utc_or_none(retry_at),
                "error": error,
                "result": None if result is None else to_json(result),
                "at": utc(now),
                "outcome": outcome,
                "held": held,
                "hold": float(hold or 0.0),
            },
        )
        if row is None:
            raise KeyError(f"no job {job_id}")

    def requeue_job(self, job_id: int, *, now: datetime | None = None) -> None:
        cursor = self.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = %s,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = %s",
            (utc(now), job_id),
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no job {job_id}")

    def release_claims(self, owner: str) -> int:
        row = self._one(
            "WITH i AS (UPDATE inbox SET claimed_by = NULL, claimed_until = NULL"
            "  WHERE claimed_by = %(owner)s AND status = 'pending' RETURNING 1),"
            " o AS (UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
            "  WHERE claimed_by = %(owner)s AND status = 'pending' RETURNING 1)"
            " SELECT (SELECT count(*) FROM i) + (SELECT count(*) FROM o) AS released",
            {"owner": owner},
        )
        assert row is not None
        return int(row["released"])

    # pacing shared by daemons ----------------------------------------------------------------
    shares_pacing = True

    def reserve_pace(self, key: str, spacing: float) -> float:
        row = self._one(
            "INSERT INTO pacing (key, next_at)"
            " VALUES (%(key)s, clock_timestamp() + %(gap)s * interval '1s')"
            " ON CONFLICT (key) DO UPDATE SET next_at ="
            "  greatest(pacing.next_at, clock_timestamp()) + %(gap)s * interval '1s'"
            " RETURNING extract(epoch FROM next_at - clock_timestamp()) - %(gap)s AS wait",
            {"key": key, "gap": spacing},
        )
        assert row is not None
        return max(float(row["wait"]), 0.0)

    def pause_pace(self, key: str, seconds: float) -> None:
        self.execute(
            "INSERT INTO pacing (key, next_at)"
            " VALUES (%(key)s, clock_timestamp() + %(s)s * interval '1s')"
            " ON CONFLICT (key) DO UPDATE SET next_at ="
            "  greatest(pacing.next_at, clock_timestamp() + %(s)s * interval '1s')",
            {"key": key, "s": seconds},
        )

    def paused_for(self, keys: Sequence[str]) -> float:
        row = self._one(
            "SELECT COALESCE(max(extract(epoch FROM next_at - clock_timestamp())), 0) AS wait"
            " FROM pacing WHERE key = ANY(%s::text[])",
            (list(keys),),
        )
        assert row is not None
        return max(float(row["wait"]), 0.0)

    # reading the record ----------------------------------------------------------------------
    def get_event(self, event_id: str) -> EventRecord | None:
        row = self._one("SELECT * FROM events WHERE event_id = %s", (event_id,))
        return _event_record(row) if row else None

    def history(
        self,
        *,
        channel: str | None = None,
        event: str | None = None,
        rule: str | None = None,
        failed: bool = False,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        where: list[str] = ["true"]
        params: dict[str, Any] = {"limit": limit}
        if channel is not None:
            where.append("e.channel = %(channel)s")
            params["channel"] = channel
        if event is not None:
            where.append("e.event = %(event)s")
            params["event"] = event
        if since is not None:
            where.append("e.processed_at >= %(since)s")
            params["since"] = utc(since)
        if rule is not None:
            where.append(
                "EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id"
                " AND o.rule = %(rule)s)"
            )
            params["rule"] = rule
        if failed:
            where.append(
                "EXISTS (SELECT 1 FROM outbox o"
                " WHERE o.event_id = e.event_id AND o.status = 'dead')"
            )
        rows = self.execute(
            f"SELECT e.* FROM events e WHERE {' AND '.join(where)}"
            " ORDER BY e.id DESC LIMIT %(limit)s",
            params,
        )
        return [_event_record(row) for row in rows]

    def jobs(
        self, *, event_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        order = "ASC" if event_id is not None else "DESC"  # plan order for one event
        rows = self.execute(
            "SELECT * FROM outbox WHERE (%(event)s::text IS NULL OR event_id = %(event)s)"
            " AND (%(status)s::text IS NULL OR status = %(status)s)"
            f" ORDER BY id {order} LIMIT %(limit)s",
            {"event": event_id, "status": status, "limit": limit},
        )
        return [_job(row) for row in rows]

    def attempts(self, job_id: int) -> list[Attempt]:
        rows = self.execute("SELECT * FROM attempts WHERE job_id = %s ORDER BY id", (job_id,))
        return [
            Attempt(
                job_id=row["job_id"],
                at=utc(row["at"]),
                outcome=row["outcome"],
                error=row["error"],
                result=row["result"],
            )
            for row in rows
        ]

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        row = self._one("SELECT * FROM inbox WHERE id = %s", (inbox_id,))
        return _inbox_item(row) if row else None

    # privacy and retention -------------------------------------------------------------------
    def forget_client(self, client_id: str, *, channel: str | None = None) -> dict[str, int]:
        return postgres_privacy.forget_client(self, client_id, channel)

    def purge(self, *, events_before: datetime, payloads_before: datetime) -> dict[str, int]:
        return postgres_privacy.purge(self, events_before, payloads_before)
