"""Reading the record in a SQL store: events, their jobs and attempts, for the dispatcher, the
console and the command line.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from rulekit.event import FORGOTTEN
from rulekit.store.erasure import ERASED_MARK
from rulekit.store.history import NotInConversation
from rulekit.store.records import (
    Attempt,
    EventRecord,
    Job,
    JobStatus,
)
from rulekit.store.sql.dialect import Row


class SQLHistory:
    """Statements that read the record, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    # provided by SQLState
    dialect: Any
    execute: Callable[..., Any]
    _one: Callable[..., Any]
    _job: Callable[..., Job]

    def _event_record(self, row: Row, trace: dict[str, Any] | None = None) -> EventRecord:
        """The record of ``row`` (with ``trace`` instead of the row's, when given)."""
        time, json = self.dialect.read_time, self.dialect.read_json
        occurred_at = time(row["occurred_at"])
        data = {} if row["data"] is None else json(row["data"])
        if data.get("occurred_at") == FORGOTTEN:  # an earlier rulekit forget's: the row knows
            data["occurred_at"] = occurred_at.isoformat()
        return EventRecord(
            event_id=row["event_id"],
            inbox_id=row["inbox_id"],
            channel=row["channel"],
            event=row["event"],
            conversation_id=row["conversation_id"],
            occurred_at=occurred_at,
            processed_at=time(row["processed_at"]),
            data=data,
            trace=json(row["trace"]) if trace is None else trace,
        )

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

    def events_for_jobs(
        self,
        event_ids: Sequence[str],
        *,
        held: Collection[str] = (),
        budget: int | None = None,
    ) -> dict[str, EventRecord]:
        if not event_ids:
            return {}
        dialect = self.dialect
        parameters: dict[str, Any] = {"ids": dialect.values(list(dict.fromkeys(event_ids)))}
        size = dialect.text_length("data")
        unread, renewed = "FALSE", "FALSE"
        if held:  # not read, nor decoded: the caller has those events, unless erased since
            parameters["held"] = dialect.values(list(held))
            erased = f"{dialect.json_text('trace', ERASED_MARK)} IS NOT NULL"
            renewed = f"({dialect.one_of('event_id', 'held')} AND {erased})"
            unread = f"({dialect.one_of('event_id', 'held')} AND NOT {erased})"
        data = f"CASE WHEN {unread} THEN NULL ELSE data END"
        if budget is not None:  # the oldest first, while they fit together
            parameters["budget"] = budget
            data = (
                f"CASE WHEN {unread} THEN NULL WHEN {renewed} THEN data"
                f" WHEN SUM(CASE WHEN {unread} THEN 0 ELSE {size} END)"
                " OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) <= :budget THEN data END"
            )
        rows = self.execute(
            "SELECT event_id, inbox_id, channel, event, conversation_id, occurred_at,"
            f" processed_at, {data} AS data, {size} AS size, NULL AS trace FROM events"
            f" WHERE {dialect.one_of('event_id', 'ids')}",
            parameters,
        )
        return {
            row["event_id"]: replace(self._event_record(row, trace={}), size=row["size"])
            for row in rows
        }

    def history(
        self,
        *,
        channel: str | None = None,
        event: str | None = None,
        rule: str | None = None,
        failed: bool = False,
        since: datetime | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[EventRecord]:
        where: list[str] = ["1 = 1"]
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            where.append("e.id < (SELECT b.id FROM events b WHERE b.event_id = :before)")
            params["before"] = before
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
        self,
        channel: str,
        conversation_id: str,
        *,
        limit: int = 200,
        before: str | None = None,
        after: str | None = None,
    ) -> list[EventRecord]:
        params: dict[str, Any] = {
            "conversation": conversation_id,
            "channel": channel,
            "limit": limit,
        }
        bound, order = self._conversation_cursor(params, before, after)
        rows = self.execute(
            "SELECT * FROM events WHERE conversation_id = :conversation AND channel = :channel"
            f"{bound} ORDER BY id {order} LIMIT :limit",
            params,
        )
        return [self._event_record(row) for row in rows]

    def conversation_page(
        self,
        channel: str,
        conversation_id: str,
        *,
        limit: int,
        budget: int,
        before: str | None = None,
        after: str | None = None,
    ) -> tuple[list[EventRecord], bool]:
        params: dict[str, Any] = {
            "conversation": conversation_id,
            "channel": channel,
            "limit": limit + 1,
        }
        bound, order = self._conversation_cursor(params, before, after)
        where = f"conversation_id = :conversation AND channel = :channel{bound}"
        # their sizes first (by the index, the rows' texts not sent): only those that fit are
        # read whole
        size = f"{self.dialect.text_length('data')} + {self.dialect.text_length('trace')}"
        sizes = self.execute(
            f"SELECT id, {size} AS size FROM events WHERE {where} ORDER BY id {order} LIMIT :limit",
            params,
        ).fetchall()
        fitting: list[int] = []
        total = 0
        for row in sizes[:limit]:
            total += row["size"]
            if fitting and total > budget:
                break
            fitting.append(row["id"])
        if not fitting:
            return [], False
        params.update(low=min(fitting), high=max(fitting))
        rows = self.execute(
            "SELECT * FROM events WHERE conversation_id = :conversation AND channel = :channel"
            f" AND id BETWEEN :low AND :high ORDER BY id {order}",
            params,
        )
        return [self._event_record(row) for row in rows], len(sizes) > len(fitting)

    def _conversation_cursor(
        self, params: dict[str, Any], before: str | None, after: str | None
    ) -> tuple[str, str]:
        """The condition and the order of a conversation's events read from a cursor."""
        if before is None and after is None:
            return "", "DESC"
        # the cursor's place, by the unique index of event ids; then a range of the
        # conversation's index (its rows are in id order there)
        cursor = before if before is not None else after
        found = self._one(
            "SELECT id FROM events WHERE event_id = :cursor"
            " AND conversation_id = :conversation AND channel = :channel",
            {**params, "cursor": cursor},
        )
        if found is None:
            raise NotInConversation(f"{cursor!r} is not an event of this conversation")
        params["cursor_id"] = found["id"]
        if before is not None:
            return " AND id < :cursor_id", "DESC"
        return " AND id > :cursor_id", "ASC"

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

    def dead_jobs(self, *, channels: Collection[str] | None, limit: int = 100) -> list[Job]:
        if channels is None:
            return self.jobs(status="dead", limit=limit)
        rows = self.execute(
            "SELECT * FROM outbox o WHERE o.status = 'dead' AND EXISTS (SELECT 1 FROM events e"
            f" WHERE e.event_id = o.event_id AND {self.dialect.one_of('e.channel', 'channels')})"
            " ORDER BY o.id DESC LIMIT :limit",
            {"channels": self.dialect.values(sorted(channels)), "limit": limit},
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
