"""The SQL behind one transaction of a SQL store: conversation state and the journal.

:class:`SQLState` holds every statement once, written for both databases (see
:mod:`rulekit.store.sql.dialect`); a store's ``transaction()`` yields one, valid only inside its
``with`` block. Methods that need several statements here are one statement on PostgreSQL
(:class:`rulekit.store.sql.postgres.PostgresState`), whose data-modifying ``WITH`` SQLite lacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from rulekit.errors import StoreError
from rulekit.event import Client, Conversation, Event
from rulekit.store.base import JournaledState
from rulekit.store.codec import trace_json
from rulekit.store.listing import ConversationQuery, ConversationSummary
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
from rulekit.store.sql import erasure, listing
from rulekit.store.sql.dialect import Dialect
from rulekit.store.sql.presence import SQLPresence
from rulekit.store.sql.stats import NOTE_MATCH, SQLStats, matched_rules
from rulekit.store.sql.timers import SQLTimers

Row = Any
"""A row of the driver (``sqlite3.Row`` or a psycopg dict): columns by name."""


class SQLState(SQLTimers, SQLPresence, SQLStats, JournaledState):
    """One open transaction of a SQL store."""

    def __init__(self, conn: Any, where: str, dialect: Dialect) -> None:
        self.conn = conn
        self.where = where
        """The store, for messages (a path, a URL without its password)."""
        self.dialect = dialect
        self.active = True
        self.statements = 0
        """Statements run (each one round trip to a server), for benchmarks."""

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one statement (``:name`` parameters), turning "cannot persist" errors into
        :class:`~rulekit.errors.StoreUnavailable`; the driver's cursor."""
        if not self.active:
            raise StoreError("this transaction has ended; use the state only inside its block")
        self.statements += 1
        try:
            return self.conn.execute(self.dialect.sql(sql), params)
        except self.dialect.error as exc:
            unavailable = self.dialect.unavailable(self.where, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Row | None:
        return self.execute(sql, params).fetchone()

    # records ---------------------------------------------------------------------------------
    def _inbox_item(self, row: Row) -> InboxItem:
        time = self.dialect.read_time
        return InboxItem(
            id=row["id"],
            channel=row["channel"],
            received_at=time(row["received_at"]),
            body=bytes(row["body"]),
            delivery_key=row["delivery_key"],
            status=row["status"],
            attempts=row["attempts"],
            error=row["error"],
            claimed_by=row["claimed_by"],
            claimed_until=time(row["claimed_until"]),
            conversation_key=row["conversation_key"],
        )

    def _job(self, row: Row) -> Job:
        time, json = self.dialect.read_time, self.dialect.read_json
        return Job(
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
            result=json(row["result"]),
            claimed_by=row["claimed_by"],
            claimed_until=time(row["claimed_until"]),
            lane=row["lane"],
            call_started_at=time(row["call_started_at"]),
            call_started_by=row["call_started_by"],
        )

    def _event_record(self, row: Row) -> EventRecord:
        time, json = self.dialect.read_time, self.dialect.read_json
        return EventRecord(
            event_id=row["event_id"],
            inbox_id=row["inbox_id"],
            channel=row["channel"],
            event=row["event"],
            conversation_id=row["conversation_id"],
            occurred_at=time(row["occurred_at"]),
            processed_at=time(row["processed_at"]),
            data=json(row["data"]),
            trace=json(row["trace"]),
        )

    # conversations ---------------------------------------------------------------------------
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        row = self._one(
            "SELECT data FROM conversations WHERE channel = :channel AND key = :key",
            {"channel": channel, "key": key},
        )
        return Conversation.model_validate_json(row["data"]) if row else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self.execute(
            "INSERT INTO conversations (channel, key, id, status, assignee, data, updated_at,"
            " active_at) VALUES (:channel, :key, :id, :status, :assignee, :data, :now, :now)"
            " ON CONFLICT (channel, key) DO UPDATE SET id = excluded.id,"
            " status = excluded.status, assignee = excluded.assignee, data = excluded.data,"
            " updated_at = excluded.updated_at",
            {
                "channel": channel,
                "key": key,
                "id": conversation.id,
                "status": conversation.status,
                "assignee": conversation.assignee.lower() if conversation.assignee else None,
                "data": conversation.model_dump_json(),
                "now": self.dialect.time(utc()),
            },
        )

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        row = self._one(
            "SELECT key, data FROM conversations WHERE id = :id AND channel = :channel LIMIT 1",
            {"id": conversation_id, "channel": channel},
        )
        return (row["key"], Conversation.model_validate_json(row["data"])) if row else None

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        return listing.list_conversations(self, query)

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        rows = self.execute(
            "SELECT assignee, COUNT(*) AS n FROM conversations"
            " WHERE status = 'open' AND assignee IS NOT NULL"
            " AND (CAST(:channel AS TEXT) IS NULL OR channel = :channel) GROUP BY assignee",
            {"channel": channel},
        )
        return {row["assignee"]: row["n"] for row in rows}

    # clients ---------------------------------------------------------------------------------
    def get_client(self, channel: str, client_id: str) -> Client | None:
        row = self._one(
            "SELECT data FROM clients WHERE channel = :channel AND id = :id",
            {"channel": channel, "id": client_id},
        )
        return Client.model_validate_json(row["data"]) if row else None

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        rows = self.execute(
            "SELECT 'conversation' AS kind, data FROM conversations"
            " WHERE channel = :channel AND key = :key"
            " UNION ALL SELECT 'client' AS kind, data FROM clients"
            " WHERE channel = :channel AND id = :key",
            {"channel": channel, "key": key},
        ).fetchall()
        found = {row["kind"]: row["data"] for row in rows}
        conversation, client = found.get("conversation"), found.get("client")
        return (
            Conversation.model_validate_json(conversation) if conversation else None,
            Client.model_validate_json(client) if client else None,
        )

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.execute(
            "INSERT INTO clients (channel, id, data, updated_at)"
            " VALUES (:channel, :id, :data, :now)"
            " ON CONFLICT (channel, id) DO UPDATE SET data = excluded.data,"
            " updated_at = excluded.updated_at",
            {
                "channel": channel,
                "id": client.id,
                "data": client.model_dump_json(),
                "now": self.dialect.time(utc()),
            },
        )

    # messages --------------------------------------------------------------------------------
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "INSERT INTO seen_messages (channel, message_id, seen_at)"
            " VALUES (:channel, :message, :now) ON CONFLICT DO NOTHING RETURNING 1 AS new",
            {"channel": channel, "message": message_id, "now": self.dialect.time(utc())},
        )
        return row is not None

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        if len(message_ids) <= 1:
            return [self.mark_message_seen(channel, m) for m in message_ids]
        new: set[str] = set()
        now = self.dialect.time(utc())
        for chunk in _chunks(list(dict.fromkeys(message_ids))):
            params = _numbered(chunk, channel=channel, now=now)
            rows = self.execute(
                "INSERT INTO seen_messages (channel, message_id, seen_at) VALUES "
                + ", ".join(f"(:channel, :m{index}, :now)" for index in range(len(chunk)))
                + " ON CONFLICT DO NOTHING RETURNING message_id",
                params,
            ).fetchall()
            new.update(row["message_id"] for row in rows)
        answers = []
        for message_id in message_ids:
            answers.append(message_id in new)
            new.discard(message_id)  # given again, it is not new
        return answers

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        seen: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(message_ids))):
            rows = self.execute(
                "SELECT message_id FROM seen_messages WHERE channel = :channel AND message_id IN ("
                + ", ".join(f":m{index}" for index in range(len(chunk)))
                + ")",
                _numbered(chunk, channel=channel),
            ).fetchall()
            seen.update(row["message_id"] for row in rows)
        return seen

    def message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "SELECT 1 AS seen FROM seen_messages WHERE channel = :channel"
            " AND message_id = :message",
            {"channel": channel, "message": message_id},
        )
        return row is not None

    # rule guards -----------------------------------------------------------------------------
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        row = self._one(
            "SELECT until FROM cooldowns WHERE rule = :rule AND conversation_id = :conversation",
            {"rule": rule, "conversation": conversation_id},
        )
        return self.dialect.read_time(row["until"]) if row else None

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        rows = self.execute(
            "SELECT rule, until FROM cooldowns WHERE conversation_id = :conversation",
            {"conversation": conversation_id},
        ).fetchall()
        return {row["rule"]: self.dialect.read_time(row["until"]) for row in rows}

    def cooldowns_for(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        marks: dict[str, dict[str, datetime]] = {
            conversation: {} for conversation in conversation_ids
        }
        if not marks:
            return marks
        rows = self.execute(
            "SELECT conversation_id, rule, until FROM cooldowns"
            f" WHERE {self.dialect.one_of('conversation_id', 'ids')}",
            {"ids": self.dialect.values(list(marks))},
        )
        for row in rows:
            marks[row["conversation_id"]][row["rule"]] = self.dialect.read_time(row["until"])
        return marks

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.execute(
            "INSERT INTO cooldowns (rule, conversation_id, until)"
            " VALUES (:rule, :conversation, :until)"
            " ON CONFLICT (rule, conversation_id) DO UPDATE SET until = excluded.until",
            {"rule": rule, "conversation": conversation_id, "until": self.dialect.time(until)},
        )

    def next_position(self, key: str, modulo: int) -> int:
        # The upsert takes the row lock: two processes advancing one counter are serialized by
        # the database and each gets its own value.
        row = self._one(
            "INSERT INTO positions (key, value) VALUES (:key, 1)"
            " ON CONFLICT (key) DO UPDATE SET value = positions.value + 1"
            " RETURNING value - 1 AS previous",
            {"key": key},
        )
        assert row is not None
        return int(row["previous"]) % modulo if modulo > 0 else 0

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
        row = self._one(
            "INSERT INTO inbox (channel, received_at, body, delivery_key, conversation_key)"
            " VALUES (:channel, :now, :body, :key, :conversation)"
            " ON CONFLICT (channel, delivery_key) DO NOTHING RETURNING id",
            {
                "channel": channel,
                "now": self.dialect.time(utc(now)),
                "body": bytes(body),
                "key": delivery_key,
                "conversation": conversation_key,
            },
        )
        if row is not None:
            return row["id"], True
        return self._first_delivery(channel, delivery_key), False

    def _first_delivery(self, channel: str, delivery_key: str | None) -> int:
        """The id of the inbox item that first came with ``delivery_key``."""
        row = self._one(
            "SELECT id FROM inbox WHERE channel = :channel AND delivery_key = :key",
            {"channel": channel, "key": delivery_key},
        )
        assert row is not None
        return int(row["id"])

    def claim_inbox(
        self, owner: str, *, lease: float, limit: int = 1, now: datetime | None = None
    ) -> list[InboxItem]:
        now = utc(now)
        rows = self.execute(
            "UPDATE inbox SET claimed_by = :owner, claimed_until = :until,"
            " attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM inbox i WHERE status = 'pending'"
            "   AND (claimed_until IS NULL OR claimed_until <= :now)"
            "   AND (conversation_key IS NULL OR NOT EXISTS (SELECT 1 FROM inbox e"
            "     WHERE e.status = 'pending' AND e.channel = i.channel"
            "       AND e.conversation_key = i.conversation_key AND e.id < i.id))"
            "   ORDER BY id LIMIT :limit)"
            " RETURNING *",
            {
                "owner": owner,
                "until": self.dialect.time(now + timedelta(seconds=lease)),
                "now": self.dialect.time(now),
                "limit": limit,
            },
        ).fetchall()
        return sorted((self._inbox_item(row) for row in rows), key=lambda item: item.id)

    def finish_inbox(self, inbox_id: int, *, error: str | None = None) -> None:
        self._update_inbox(inbox_id, "done" if error is None else "failed", error)

    def finish_inbox_items(self, inbox_ids: Sequence[int]) -> None:
        if not inbox_ids:
            return
        cursor = self.execute(
            "UPDATE inbox SET status = 'done', error = NULL, claimed_by = NULL,"
            f" claimed_until = NULL WHERE {self.dialect.one_of('id', 'ids')}",
            {"ids": self.dialect.values(list(inbox_ids))},
        )
        if cursor.rowcount != len(set(inbox_ids)):
            raise KeyError(f"not every inbox item of {list(inbox_ids)} is stored")

    def requeue_inbox(self, inbox_id: int) -> None:
        self._update_inbox(inbox_id, "pending", None)

    def _update_inbox(self, inbox_id: int, status: InboxStatus, error: str | None) -> None:
        cursor = self.execute(
            "UPDATE inbox SET status = :status, error = :error, claimed_by = NULL,"
            " claimed_until = NULL WHERE id = :id",
            {"status": status, "error": error, "id": inbox_id},
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no inbox item {inbox_id}")

    def inbox_items(
        self, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]:
        rows = self.execute(
            "SELECT * FROM inbox WHERE (CAST(:status AS TEXT) IS NULL OR status = :status)"
            " ORDER BY id DESC LIMIT :limit",
            {"status": status, "limit": limit},
        )
        return [self._inbox_item(row) for row in rows]

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        row = self._one("SELECT * FROM inbox WHERE id = :id", {"id": inbox_id})
        return self._inbox_item(row) if row else None

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
        time, json = self.dialect.time, self.dialect.json
        at = time(utc(now))
        row = self._one(
            "INSERT INTO events (event_id, inbox_id, channel, event, conversation_id,"
            " occurred_at, data, trace, processed_at) VALUES (:id, :inbox, :channel, :event,"
            " :conversation, :occurred, :data, :trace, :now)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING id",
            {
                "id": event.id,
                "inbox": inbox_id,
                "channel": event.channel,
                "event": event.event,
                "conversation": event.conversation.id,
                "occurred": time(event.occurred_at),
                "data": json(event.public()),
                "trace": trace_json(trace),
                "now": at,
            },
        )
        if row is None:
            return False
        if event.conversation.id is not None:
            self.execute(
                listing.TOUCH,
                {
                    "now": at,
                    "client": event.client.id,
                    "conversation": event.conversation.id,
                    "channel": event.channel,
                },
            )
        for rule in matched_rules(trace):
            self.execute(NOTE_MATCH, {"rule": rule, "event": event.id, "now": at})
        for job in jobs:
            self.execute(
                "INSERT INTO outbox (event_id, rule, action, params, destination, lane,"
                " next_attempt_at) VALUES (:event, :rule, :action, :params, :destination,"
                " :lane, :now)",
                {
                    "event": event.id,
                    "rule": job.rule,
                    "action": job.action,
                    "params": json(job.params),
                    "destination": job.destination,
                    "lane": job.lane or job.destination,
                    "now": at,
                },
            )
        return True

    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        now = utc(now)
        # a due job that is free (or ours), in a lane nobody else holds, with every older
        # pending job of its lane due too: the due prefix of each free lane
        rows = self.execute(
            "UPDATE outbox SET claimed_by = :owner, claimed_until = :until"
            " WHERE id IN (SELECT j.id FROM outbox j"
            f" {self.dialect.by_index('outbox_due')} WHERE j.status = 'pending'"
            "   AND j.next_attempt_at <= :now"
            "   AND (j.claimed_until IS NULL OR j.claimed_until <= :now)"
            "   AND NOT EXISTS (SELECT 1 FROM outbox k WHERE k.lane = j.lane"
            "     AND k.status = 'pending' AND ((k.claimed_until > :now AND k.claimed_by <> :owner)"
            "       OR (k.id < j.id AND k.next_attempt_at > :now)))"
            "   ORDER BY j.id LIMIT :limit)"
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
            {
                "now": self.dialect.time(now),
                "owner": owner,
                "until": self.dialect.time(now + timedelta(seconds=lease)),
                "id": job_id,
            },
        )
        return True

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
        time = self.dialect.time
        row = self._one("SELECT status FROM outbox WHERE id = :id", {"id": job_id})
        if row is None:
            raise KeyError(f"no job {job_id}")
        result_json = self.dialect.json(result)
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
        if row["status"] != "pending":  # done or dead stays so; the attempt is still counted
            self.execute(
                "UPDATE outbox SET attempts = attempts + 1, call_started_at = NULL,"
                " call_started_by = NULL WHERE id = :id",
                {"id": job_id},
            )
            return
        until = None
        if outcome == "retry" and hold is not None and retry_at is not None:
            until = time(utc(retry_at) + timedelta(seconds=hold))
        self.execute(
            "UPDATE outbox SET status = :status, attempts = attempts + 1,"
            " next_attempt_at = COALESCE(:retry_at, next_attempt_at),"
            " last_error = COALESCE(:error, last_error), result = :result,"
            " claimed_by = CASE WHEN :until IS NULL THEN NULL ELSE claimed_by END,"
            " claimed_until = :until, call_started_at = NULL, call_started_by = NULL"
            " WHERE id = :id",
            {
                "status": "pending" if outcome == "retry" else outcome,
                "retry_at": time(retry_at),
                "error": error,
                "result": result_json,
                "until": until,
                "id": job_id,
            },
        )

    def requeue_job(self, job_id: int, *, now: datetime | None = None) -> None:
        cursor = self.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = :now,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = :id",
            {"now": self.dialect.time(utc(now)), "id": job_id},
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no job {job_id}")

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

    # reading the record ----------------------------------------------------------------------
    def get_event(self, event_id: str) -> EventRecord | None:
        row = self._one("SELECT * FROM events WHERE event_id = :id", {"id": event_id})
        return self._event_record(row) if row else None

    def recorded(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = self.execute(
            f"SELECT event_id FROM events WHERE {self.dialect.one_of('event_id', 'ids')}",
            {"ids": self.dialect.values(list(event_ids))},
        )
        return {row["event_id"] for row in rows}

    def events_for_jobs(self, event_ids: Sequence[str]) -> dict[str, EventRecord]:
        if not event_ids:
            return {}
        rows = self.execute(
            "SELECT event_id, inbox_id, channel, event, conversation_id, occurred_at,"
            " processed_at, data, NULL AS trace FROM events"
            f" WHERE {self.dialect.one_of('event_id', 'ids')}",
            {"ids": self.dialect.values(list(dict.fromkeys(event_ids)))},
        )
        records = (self._event_record(row) for row in rows)
        return {record.event_id: replace(record, trace={}) for record in records}

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
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        if channel is not None:
            where.append("e.channel = :channel")
            params["channel"] = channel
        if event is not None:
            where.append("e.event = :event")
            params["event"] = event
        if since is not None:
            where.append("e.processed_at >= :since")
            params["since"] = self.dialect.time(since)
        if rule is not None:
            where.append(
                "EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id AND o.rule = :rule)"
            )
            params["rule"] = rule
        if failed:
            where.append(
                "EXISTS (SELECT 1 FROM outbox o"
                " WHERE o.event_id = e.event_id AND o.status = 'dead')"
            )
        rows = self.execute(
            f"SELECT e.* FROM events e WHERE {' AND '.join(where)} ORDER BY e.id DESC LIMIT :limit",
            params,
        )
        return [self._event_record(row) for row in rows]

    def conversation_events(
        self, channel: str, conversation_id: str, *, limit: int = 200
    ) -> list[EventRecord]:
        rows = self.execute(
            "SELECT * FROM events WHERE conversation_id = :conversation AND channel = :channel"
            " ORDER BY id DESC LIMIT :limit",
            {"conversation": conversation_id, "channel": channel, "limit": limit},
        )
        return [self._event_record(row) for row in rows]

    def get_job(self, job_id: int) -> Job | None:
        row = self._one("SELECT * FROM outbox WHERE id = :id", {"id": job_id})
        return self._job(row) if row else None

    def jobs(
        self, *, event_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        order = "ASC" if event_id is not None else "DESC"  # plan order for one event
        rows = self.execute(
            "SELECT * FROM outbox WHERE (CAST(:event AS TEXT) IS NULL OR event_id = :event)"
            " AND (CAST(:status AS TEXT) IS NULL OR status = :status)"
            f" ORDER BY id {order} LIMIT :limit",
            {"event": event_id, "status": status, "limit": limit},
        )
        return [self._job(row) for row in rows]

    def jobs_of_events(self, event_ids: Sequence[str]) -> dict[str, list[Job]]:
        found: dict[str, list[Job]] = {event_id: [] for event_id in event_ids}
        if not found:
            return found
        rows = self.execute(
            f"SELECT * FROM outbox WHERE {self.dialect.one_of('event_id', 'ids')} ORDER BY id",
            {"ids": self.dialect.values(list(found))},
        )
        for row in rows:
            found[row["event_id"]].append(self._job(row))
        return found

    def attempts(self, job_id: int) -> list[Attempt]:
        rows = self.execute("SELECT * FROM attempts WHERE job_id = :id ORDER BY id", {"id": job_id})
        return [
            Attempt(
                job_id=row["job_id"],
                at=self.dialect.read_time(row["at"]),
                outcome=row["outcome"],
                error=row["error"],
                result=self.dialect.read_json(row["result"]),
            )
            for row in rows
        ]

    # privacy and retention -------------------------------------------------------------------
    def forget_client(self, client_id: str, *, channel: str | None = None) -> dict[str, int]:
        return erasure.forget_client(self, client_id, channel)

    def purge(
        self, *, events_before: datetime, payloads_before: datetime, batch: int | None = None
    ) -> dict[str, int]:
        return erasure.purge(self, events_before, payloads_before, batch)


_CHUNK = 500
"""Most values one statement binds (SQLite and PostgreSQL bind at least tens of thousands)."""


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[start : start + _CHUNK] for start in range(0, len(values), _CHUNK)]


def _numbered(values: list[str], **params: Any) -> dict[str, Any]:
    """``params`` with ``values`` as ``m0``, ``m1``... (for a statement's list of values)."""
    params.update((f"m{index}", value) for index, value in enumerate(values))
    return params
