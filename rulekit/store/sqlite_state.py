"""The SQL behind one SQLite transaction: conversation state and the journal.

:class:`SQLiteState` is what :meth:`SQLiteStore.transaction` yields; it is only valid inside the
``with`` block. The statements stay close to standard SQL (``ON CONFLICT``, ``RETURNING``) so
the PostgreSQL store can follow them closely.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from rulekit.errors import StoreError, StoreUnavailable
from rulekit.event import Client, Conversation, Event
from rulekit.store import sqlite_privacy
from rulekit.store.base import JournaledState
from rulekit.store.codec import from_json, from_ts, to_json, ts
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

# Primary result codes that mean the database cannot be used right now, not that the caller
# made a mistake (https://www.sqlite.org/rescode.html).
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
_HINTS = {
    sqlite3.SQLITE_READONLY: "is the file or its directory read-only?",
    sqlite3.SQLITE_CANTOPEN: "is the file or its directory missing or read-only?",
    sqlite3.SQLITE_FULL: "is the disk full?",
    sqlite3.SQLITE_BUSY: "another process held the database past the busy timeout",
    sqlite3.SQLITE_NOTADB: "is this a rulekit database?",
}


def unavailable_error(path: Path, exc: sqlite3.Error) -> StoreUnavailable | None:
    """A :class:`StoreUnavailable` for ``exc`` when it means the database cannot be used right
    now (read-only, full, I/O, busy); ``None`` for anything else, which is a bug to re-raise."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _UNAVAILABLE:
        return None
    name = getattr(exc, "sqlite_errorname", "SQLITE_ERROR")
    message = f"SQLite store {path} cannot be used: {exc} ({name})"
    hint = _HINTS.get(code & 0xFF)
    return StoreUnavailable(f"{message}; {hint}" if hint else message)


def _inbox_item(row: sqlite3.Row) -> InboxItem:
    return InboxItem(
        id=row["id"],
        channel=row["channel"],
        received_at=from_ts(row["received_at"]),
        body=bytes(row["body"]),
        delivery_key=row["delivery_key"],
        status=row["status"],
        attempts=row["attempts"],
        error=row["error"],
        claimed_by=row["claimed_by"],
        claimed_until=from_ts(row["claimed_until"]),
        conversation_key=row["conversation_key"],
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        event_id=row["event_id"],
        rule=row["rule"],
        action=row["action"],
        params=from_json(row["params"]),
        destination=row["destination"],
        status=row["status"],
        attempts=row["attempts"],
        next_attempt_at=from_ts(row["next_attempt_at"]),
        last_error=row["last_error"],
        result=from_json(row["result"]),
        claimed_by=row["claimed_by"],
        claimed_until=from_ts(row["claimed_until"]),
        lane=row["lane"],
        call_started_at=from_ts(row["call_started_at"]),
        call_started_by=row["call_started_by"],
    )


def _event_record(row: sqlite3.Row) -> EventRecord:
    return EventRecord(
        event_id=row["event_id"],
        inbox_id=row["inbox_id"],
        channel=row["channel"],
        event=row["event"],
        conversation_id=row["conversation_id"],
        occurred_at=from_ts(row["occurred_at"]),
        processed_at=from_ts(row["processed_at"]),
        data=from_json(row["data"]),
        trace=from_json(row["trace"]),
    )


class SQLiteState(JournaledState):
    """One open SQLite transaction."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.active = True

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> sqlite3.Cursor:
        """Run one statement, turning "cannot persist" errors into StoreUnavailable."""
        if not self.active:
            raise StoreError("this transaction has ended; use the state only inside its block")
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            unavailable = unavailable_error(self.path, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.execute(sql, params).fetchone()
        return row

    # conversations ---------------------------------------------------------------------------
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        row = self._one(
            "SELECT data FROM conversations WHERE channel = ? AND key = ?", (channel, key)
        )
        return Conversation.model_validate_json(row["data"]) if row else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self.execute(
            "INSERT INTO conversations (channel, key, id, status, assignee, data, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)"
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
                ts(utc()),
            ),
        )

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        row = self._one(
            "SELECT key, data FROM conversations WHERE id = ? AND channel = ? LIMIT 1",
            (conversation_id, channel),
        )
        return (row["key"], Conversation.model_validate_json(row["data"])) if row else None

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        rows = self.execute(
            "SELECT assignee, COUNT(*) AS n FROM conversations"
            " WHERE status = 'open' AND assignee IS NOT NULL AND (? IS NULL OR channel = ?)"
            " GROUP BY assignee",
            (channel, channel),
        )
        return {row["assignee"]: row["n"] for row in rows}

    # clients ---------------------------------------------------------------------------------
    def get_client(self, channel: str, client_id: str) -> Client | None:
        row = self._one(
            "SELECT data FROM clients WHERE channel = ? AND id = ?", (channel, client_id)
        )
        return Client.model_validate_json(row["data"]) if row else None

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.execute(
            "INSERT INTO clients (channel, id, data, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (channel, id) DO UPDATE SET data = excluded.data,"
            " updated_at = excluded.updated_at",
            (channel, client.id, client.model_dump_json(), ts(utc())),
        )

    # messages --------------------------------------------------------------------------------
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "INSERT INTO seen_messages (channel, message_id, seen_at) VALUES (?, ?, ?)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (channel, message_id, ts(utc())),
        )
        return row is not None

    def message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "SELECT 1 FROM seen_messages WHERE channel = ? AND message_id = ?",
            (channel, message_id),
        )
        return row is not None

    # rule guards -----------------------------------------------------------------------------
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        row = self._one(
            "SELECT until FROM cooldowns WHERE rule = ? AND conversation_id = ?",
            (rule, conversation_id),
        )
        return from_ts(row["until"]) if row else None

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        rows = self.execute(
            "SELECT rule, until FROM cooldowns WHERE conversation_id = ?", (conversation_id,)
        ).fetchall()
        return {row["rule"]: from_ts(row["until"]) for row in rows}

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.execute(
            "INSERT INTO cooldowns (rule, conversation_id, until) VALUES (?, ?, ?)"
            " ON CONFLICT (rule, conversation_id) DO UPDATE SET until = excluded.until",
            (rule, conversation_id, ts(until)),
        )

    def next_position(self, key: str, modulo: int) -> int:
        row = self._one(
            "INSERT INTO positions (key, value) VALUES (?, 1)"
            " ON CONFLICT (key) DO UPDATE SET value = value + 1 RETURNING value - 1 AS previous",
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
        row = self._one(
            "INSERT INTO inbox (channel, received_at, body, delivery_key, conversation_key)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel, delivery_key) DO NOTHING RETURNING id",
            (channel, ts(utc(now)), bytes(body), delivery_key, conversation_key),
        )
        if row is not None:
            return row["id"], True
        first = self._one(
            "SELECT id FROM inbox WHERE channel = ? AND delivery_key = ?", (channel, delivery_key)
        )
        assert first is not None
        return first["id"], False

    def claim_inbox(
        self, owner: str, *, lease: float, limit: int = 1, now: datetime | None = None
    ) -> list[InboxItem]:
        now = utc(now)
        rows = self.execute(
            "UPDATE inbox SET claimed_by = ?, claimed_until = ?, attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM inbox i WHERE status = 'pending'"
            "   AND (claimed_until IS NULL OR claimed_until <= ?)"
            "   AND (conversation_key IS NULL OR NOT EXISTS (SELECT 1 FROM inbox e"
            "     WHERE e.status = 'pending' AND e.channel = i.channel"
            "       AND e.conversation_key = i.conversation_key AND e.id < i.id))"
            "   ORDER BY id LIMIT ?)"
            " RETURNING *",
            (owner, ts(now + timedelta(seconds=lease)), ts(now), limit),
        ).fetchall()
        return sorted((_inbox_item(row) for row in rows), key=lambda item: item.id)

    def finish_inbox(self, inbox_id: int, *, error: str | None = None) -> None:
        self._update_inbox(inbox_id, "done" if error is None else "failed", error)

    def requeue_inbox(self, inbox_id: int) -> None:
        self._update_inbox(inbox_id, "pending", None)

    def _update_inbox(self, inbox_id: int, status: InboxStatus, error: str | None) -> None:
        cursor = self.execute(
            "UPDATE inbox SET status = ?, error = ?, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = ?",
            (status, error, inbox_id),
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no inbox item {inbox_id}")

    def inbox_items(
        self, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]:
        rows = self.execute(
            "SELECT * FROM inbox WHERE (? IS NULL OR status = ?) ORDER BY id DESC LIMIT ?",
            (status, status, limit),
        )
        return [_inbox_item(row) for row in rows]

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        row = self._one("SELECT * FROM inbox WHERE id = ?", (inbox_id,))
        return _inbox_item(row) if row else None

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
        now = utc(now)
        row = self._one(
            "INSERT INTO events (event_id, inbox_id, channel, event, conversation_id,"
            " occurred_at, data, trace, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING id",
            (
                event.id,
                inbox_id,
                event.channel,
                event.event,
                event.conversation.id,
                ts(event.occurred_at),
                to_json(event.public()),
                to_json(dict(trace)),
                ts(now),
            ),
        )
        if row is None:
            return False
        for job in jobs:
            self.execute(
                "INSERT INTO outbox (event_id, rule, action, params, destination, lane,"
                " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.id,
                    job.rule,
                    job.action,
                    to_json(job.params),
                    job.destination,
                    job.lane or job.destination,
                    ts(now),
                ),
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
            " WHERE id IN (SELECT j.id FROM outbox j WHERE j.status = 'pending'"
            "   AND j.next_attempt_at <= :now"
            "   AND (j.claimed_until IS NULL OR j.claimed_until <= :now)"
            "   AND NOT EXISTS (SELECT 1 FROM outbox k WHERE k.lane = j.lane"
            "     AND k.status = 'pending' AND ((k.claimed_until > :now AND k.claimed_by <> :owner)"
            "       OR (k.id < j.id AND k.next_attempt_at > :now)))"
            "   ORDER BY j.id LIMIT :limit)"
            " RETURNING *",
            {
                "owner": owner,
                "until": ts(now + timedelta(seconds=lease)),
                "now": ts(now),
                "limit": limit,
            },
        ).fetchall()
        return sorted((_job(row) for row in rows), key=lambda job: job.id)

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        now = utc(now)
        row = self._one(
            "SELECT status, claimed_by, lane, call_started_by FROM outbox WHERE id = ?", (job_id,)
        )
        if row is None:
            raise KeyError(f"no job {job_id}")
        if row["status"] != "pending" or row["claimed_by"] != owner:
            return False
        if self._one(
            "SELECT 1 FROM outbox WHERE lane = ? AND status = 'pending' AND id < ? LIMIT 1",
            (row["lane"], job_id),
        ):
            self.execute(
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL WHERE id = ?", (job_id,)
            )
            return False
        if row["call_started_by"] not in (None, owner):
            self.execute(
                "INSERT INTO attempts (job_id, at, outcome, error) VALUES (?, ?, 'retry', ?)",
                (job_id, ts(now), INTERRUPTED),
            )
            self.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (job_id,))
        self.execute(
            "UPDATE outbox SET call_started_at = ?, call_started_by = ?, claimed_until = ?"
            " WHERE id = ?",
            (ts(now), owner, ts(now + timedelta(seconds=lease)), job_id),
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
        row = self._one("SELECT status FROM outbox WHERE id = ?", (job_id,))
        if row is None:
            raise KeyError(f"no job {job_id}")
        result_json = None if result is None else to_json(result)
        self.execute(
            "INSERT INTO attempts (job_id, at, outcome, error, result) VALUES (?, ?, ?, ?, ?)",
            (job_id, ts(utc(now)), outcome, error, result_json),
        )
        if row["status"] != "pending":  # done or dead stays so; the attempt is still counted
            self.execute(
                "UPDATE outbox SET attempts = attempts + 1, call_started_at = NULL,"
                " call_started_by = NULL WHERE id = ?",
                (job_id,),
            )
            return
        status = "pending" if outcome == "retry" else outcome
        until = None
        if outcome == "retry" and hold is not None and retry_at is not None:
            until = ts(utc(retry_at) + timedelta(seconds=hold))
        self.execute(
            "UPDATE outbox SET status = ?, attempts = attempts + 1,"
            " next_attempt_at = COALESCE(?, next_attempt_at),"
            " last_error = COALESCE(?, last_error), result = ?,"
            " claimed_by = CASE WHEN ? IS NULL THEN NULL ELSE claimed_by END,"
            " claimed_until = ?, call_started_at = NULL, call_started_by = NULL WHERE id = ?",
            (status, ts(retry_at), error, result_json, until, until, job_id),
        )

    def requeue_job(self, job_id: int, *, now: datetime | None = None) -> None:
        cursor = self.execute(
            "UPDATE outbox SET status = 'pending', next_attempt_at = ?,"
            " claimed_by = NULL, claimed_until = NULL WHERE id = ?",
            (ts(utc(now)), job_id),
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no job {job_id}")

    # reading the record ----------------------------------------------------------------------
    def release_claims(self, owner: str) -> int:
        released = 0
        for table in ("inbox", "outbox"):
            cursor = self.execute(
                f"UPDATE {table} SET claimed_by = NULL, claimed_until = NULL"
                " WHERE claimed_by = ? AND status = 'pending'",
                (owner,),
            )
            released += cursor.rowcount
        return released

    def get_event(self, event_id: str) -> EventRecord | None:
        row = self._one("SELECT * FROM events WHERE event_id = ?", (event_id,))
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
        where: list[str] = ["1 = 1"]
        params: list[object] = []
        if channel is not None:
            where.append("e.channel = ?")
            params.append(channel)
        if event is not None:
            where.append("e.event = ?")
            params.append(event)
        if since is not None:
            where.append("e.processed_at >= ?")
            params.append(ts(since))
        if rule is not None:
            where.append(
                "EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id AND o.rule = ?)"
            )
            params.append(rule)
        if failed:
            where.append(
                "EXISTS (SELECT 1 FROM outbox o"
                " WHERE o.event_id = e.event_id AND o.status = 'dead')"
            )
        rows = self.execute(
            f"SELECT e.* FROM events e WHERE {' AND '.join(where)} ORDER BY e.id DESC LIMIT ?",
            (*params, limit),
        )
        return [_event_record(row) for row in rows]

    def jobs(
        self, *, event_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        order = "ASC" if event_id is not None else "DESC"  # plan order for one event
        rows = self.execute(
            "SELECT * FROM outbox WHERE (? IS NULL OR event_id = ?) AND (? IS NULL OR status = ?)"
            f" ORDER BY id {order} LIMIT ?",
            (event_id, event_id, status, status, limit),
        )
        return [_job(row) for row in rows]

    def attempts(self, job_id: int) -> list[Attempt]:
        rows = self.execute("SELECT * FROM attempts WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            Attempt(
                job_id=row["job_id"],
                at=from_ts(row["at"]),
                outcome=row["outcome"],
                error=row["error"],
                result=from_json(row["result"]),
            )
            for row in rows
        ]

    # privacy and retention -------------------------------------------------------------------
    def forget_client(self, client_id: str, *, channel: str | None = None) -> dict[str, int]:
        return sqlite_privacy.forget_client(self, client_id, channel)

    def purge(self, *, events_before: datetime, payloads_before: datetime) -> dict[str, int]:
        return sqlite_privacy.purge(self, events_before, payloads_before)
