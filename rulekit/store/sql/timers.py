"""The timers of timed rules in a SQL store: one statement per operation, the same for SQLite and
PostgreSQL (a claim locks its rows with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, see
:attr:`~rulekit.store.sql.dialect.Dialect.skip_locked`).

Every lookup is indexed: the pending timer of a (rule, conversation) is unique (a partial unique
index, which also makes "keep the first timer" an ``ON CONFLICT DO NOTHING``), and the earliest
due time is the first entry of a partial index on ``due``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rulekit.store.records import Timer, utc

TIMER_COLUMNS = (
    "id, rule, conversation_id, channel, due, trigger_event_id, status, set_at, finished_at,"
    " reason, by_event, claimed_by, claimed_until"
)


class SQLTimers:
    """Timer statements, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    dialect: Any

    def execute(self, sql: str, params: Any = ()) -> Any:  # provided by SQLState
        raise NotImplementedError

    def _timer(self, row: Any) -> Timer:
        time = self.dialect.read_time
        return Timer(
            id=row["id"],
            rule=row["rule"],
            conversation_id=row["conversation_id"],
            channel=row["channel"],
            due=time(row["due"]),
            trigger_event_id=row["trigger_event_id"],
            status=row["status"],
            set_at=time(row["set_at"]),
            finished_at=time(row["finished_at"]),
            reason=row["reason"],
            by_event=row["by_event"],
            claimed_by=row["claimed_by"],
            claimed_until=time(row["claimed_until"]),
        )

    def set_timer(
        self,
        rule: str,
        conversation_id: str,
        channel: str,
        due: datetime,
        trigger_event_id: str,
        *,
        restart: bool = False,
        now: datetime | None = None,
    ) -> None:
        on_conflict = (
            "DO UPDATE SET due = excluded.due, trigger_event_id = excluded.trigger_event_id,"
            " set_at = excluded.set_at, claimed_by = NULL, claimed_until = NULL"
            if restart
            else "DO NOTHING"
        )
        self.execute(
            "INSERT INTO timers (rule, conversation_id, channel, due, trigger_event_id, set_at)"
            " VALUES (:rule, :conversation_id, :channel, :due, :trigger, :now)"
            " ON CONFLICT (rule, conversation_id) WHERE status = 'pending' " + on_conflict,
            {
                "rule": rule,
                "conversation_id": conversation_id,
                "channel": channel,
                "due": self.dialect.time(utc(due)),
                "trigger": trigger_event_id,
                "now": self.dialect.time(utc(now)),
            },
        )

    def cancel_timers(
        self, rule: str, conversation_id: str, *, by_event: str, now: datetime | None = None
    ) -> int:
        cursor = self.execute(
            "UPDATE timers SET status = 'cancelled', by_event = :event, finished_at = :now,"
            " claimed_by = NULL, claimed_until = NULL"
            " WHERE rule = :rule AND conversation_id = :conversation_id AND status = 'pending'",
            {
                "rule": rule,
                "conversation_id": conversation_id,
                "event": by_event,
                "now": self.dialect.time(utc(now)),
            },
        )
        return int(cursor.rowcount)

    def next_timer_due(self) -> datetime | None:
        row = self.execute(
            "SELECT due FROM timers WHERE status = 'pending' ORDER BY due LIMIT 1"
        ).fetchone()
        return None if row is None else self.dialect.read_time(row["due"])

    def claim_timers(
        self, owner: str, *, lease: float, limit: int = 20, now: datetime | None = None
    ) -> list[Timer]:
        now = utc(now)
        rows = self.execute(
            "UPDATE timers SET claimed_by = :owner, claimed_until = :until"
            " WHERE id IN (SELECT id FROM timers WHERE status = 'pending' AND due <= :now"
            "   AND (claimed_until IS NULL OR claimed_until <= :now)"
            f"   ORDER BY due, id LIMIT :limit{self.dialect.skip_locked})"
            f" RETURNING {TIMER_COLUMNS}",
            {
                "owner": owner,
                "until": self.dialect.time(now + timedelta(seconds=lease)),
                "now": self.dialect.time(now),
                "limit": limit,
            },
        ).fetchall()
        return sorted((self._timer(row) for row in rows), key=lambda t: (t.due, t.id))

    def finish_timer(
        self,
        timer_id: int,
        owner: str,
        outcome: str,
        *,
        reason: str = "",
        at: datetime | None = None,
        event_id: str | None = None,
    ) -> bool:
        cursor = self.execute(
            "UPDATE timers SET status = :outcome, reason = :reason, finished_at = :at,"
            " by_event = :event, claimed_by = NULL, claimed_until = NULL"
            " WHERE id = :id AND status = 'pending' AND claimed_by = :owner",
            {
                "id": timer_id,
                "owner": owner,
                "outcome": outcome,
                "reason": reason[:2000] or None,
                "at": self.dialect.time(utc(at)),
                "event": event_id,
            },
        )
        return bool(cursor.rowcount == 1)

    def hand_back_timer(self, timer_id: int, owner: str, *, until: datetime) -> bool:
        cursor = self.execute(
            "UPDATE timers SET claimed_by = NULL, claimed_until = :until"
            " WHERE id = :id AND status = 'pending' AND claimed_by = :owner",
            {"id": timer_id, "owner": owner, "until": self.dialect.time(utc(until))},
        )
        return bool(cursor.rowcount == 1)

    def timers(
        self, *, event_id: str | None = None, conversation_id: str | None = None, limit: int = 100
    ) -> list[Timer]:
        where, params = [], {"limit": limit, "event": event_id, "conversation": conversation_id}
        if event_id is not None:
            where.append("(trigger_event_id = :event OR by_event = :event)")
        if conversation_id is not None:
            where.append("conversation_id = :conversation")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self.execute(
            f"SELECT {TIMER_COLUMNS} FROM timers{clause} ORDER BY id DESC LIMIT :limit", params
        ).fetchall()
        return [self._timer(row) for row in rows]
