"""The inbox in a SQL store: webhooks appended before their 200, claimed with a lease in
arrival order (an item waits while an older one of its conversation is pending), finished or set
aside.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from rulekit.errors import ClaimLost
from rulekit.store.records import (
    InboxItem,
    InboxStatus,
    utc,
)
from rulekit.store.sql.dialect import Row

_NOT_BODY = (
    "id, channel, received_at, delivery_key, status, attempts, error, claimed_by, claimed_until,"
    " conversation_key"
)
"""The inbox's columns but the body."""


class SQLInbox:
    """Inbox statements, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    # provided by SQLState
    dialect: Any
    execute: Callable[..., Any]
    _one: Callable[..., Any]

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
        self,
        owner: str,
        *,
        lease: float,
        limit: int = 1,
        now: datetime | None = None,
        budget: int | None = None,
    ) -> list[InboxItem]:
        now = utc(now)
        rows = self.execute(
            "UPDATE inbox SET claimed_by = :owner, claimed_until = :until,"
            " attempts = attempts + 1"
            " WHERE id IN (SELECT id FROM (SELECT id, length(body) AS size,"
            "   SUM(length(body)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS total"
            "   FROM inbox i WHERE status = 'pending'"
            "   AND (claimed_until IS NULL OR claimed_until <= :now)"
            "   AND (conversation_key IS NULL OR NOT EXISTS (SELECT 1 FROM inbox e"
            "     WHERE e.status = 'pending' AND e.channel = i.channel"
            "       AND e.conversation_key = i.conversation_key AND e.id < i.id))"
            "   ORDER BY id LIMIT :limit) head"
            " WHERE head.total <= :budget OR head.total = head.size)"
            " RETURNING *",
            {
                "owner": owner,
                "until": self.dialect.time(now + timedelta(seconds=lease)),
                "now": self.dialect.time(now),
                "limit": limit,
                "budget": 2**62 if budget is None else max(budget, 1),
            },
        ).fetchall()
        return sorted((self._inbox_item(row) for row in rows), key=lambda item: item.id)

    def finish_inbox(
        self, inbox_id: int, *, error: str | None = None, owner: str | None = None
    ) -> None:
        if owner is not None:
            self._finish_held([inbox_id], owner, error)
            return
        self._update_inbox(inbox_id, "done" if error is None else "failed", error)

    def finish_inbox_items(self, inbox_ids: Sequence[int], *, owner: str | None = None) -> None:
        if not inbox_ids:
            return
        if owner is not None:
            self._finish_held(inbox_ids, owner, None)
            return
        cursor = self.execute(
            "UPDATE inbox SET status = 'done', error = NULL, claimed_by = NULL,"
            f" claimed_until = NULL WHERE {self.dialect.one_of('id', 'ids')}",
            {"ids": self.dialect.values(list(inbox_ids))},
        )
        if cursor.rowcount != len(set(inbox_ids)):
            raise KeyError(f"not every inbox item of {list(inbox_ids)} is stored")

    def _finish_held(self, inbox_ids: Sequence[int], owner: str, error: str | None) -> None:
        """Finish the items ``owner`` still holds the claim of (pending, claimed by it, however
        late); :class:`ClaimLost` names those it does not."""
        rows = self.execute(
            "UPDATE inbox SET status = :status, error = :error, claimed_by = NULL,"
            f" claimed_until = NULL WHERE {self.dialect.one_of('id', 'ids')}"
            " AND status = 'pending' AND claimed_by = :owner RETURNING id",
            {
                "ids": self.dialect.values(list(inbox_ids)),
                "status": "done" if error is None else "failed",
                "error": error,
                "owner": owner,
            },
        ).fetchall()
        lost = set(inbox_ids) - {row["id"] for row in rows}
        if lost:
            raise ClaimLost(lost)

    def requeue_inbox(self, inbox_id: int, *, only_from: InboxStatus | None = None) -> bool:
        if only_from is None:
            self._update_inbox(inbox_id, "pending", None)
            return True
        cursor = self.execute(
            "UPDATE inbox SET status = 'pending', error = NULL, claimed_by = NULL,"
            " claimed_until = NULL WHERE id = :id AND status = :status",
            {"id": inbox_id, "status": only_from},
        )
        if cursor.rowcount == 0 and self.get_inbox(inbox_id) is None:
            raise KeyError(f"no inbox item {inbox_id}")
        return bool(cursor.rowcount)

    def _update_inbox(self, inbox_id: int, status: InboxStatus, error: str | None) -> None:
        cursor = self.execute(
            "UPDATE inbox SET status = :status, error = :error, claimed_by = NULL,"
            " claimed_until = NULL WHERE id = :id",
            {"status": status, "error": error, "id": inbox_id},
        )
        if cursor.rowcount == 0:
            raise KeyError(f"no inbox item {inbox_id}")

    def inbox_items(
        self,
        *,
        status: InboxStatus | None = None,
        limit: int = 100,
        channels: Collection[str] | None = None,
    ) -> list[InboxItem]:
        where, params = self._inbox_filter(status, limit, channels)
        rows = self.execute(
            f"SELECT * FROM inbox WHERE {where} ORDER BY id DESC LIMIT :limit", params
        )
        return [self._inbox_item(row) for row in rows]

    def _inbox_filter(
        self, status: InboxStatus | None, limit: int, channels: Collection[str] | None
    ) -> tuple[str, dict[str, Any]]:
        """The WHERE clause and parameters of a listing of inbox items."""
        params: dict[str, Any] = {"status": status, "limit": limit}
        where = "(CAST(:status AS TEXT) IS NULL OR status = :status)"
        if channels is not None:
            where += f" AND {self.dialect.one_of('channel', 'channels')}"
            params["channels"] = self.dialect.values(sorted(channels))
        return where, params

    def inbox_heads(
        self,
        head: int,
        *,
        status: InboxStatus | None = None,
        limit: int = 100,
        channels: Collection[str] | None = None,
    ) -> list[tuple[InboxItem, int]]:
        # the heads only: a listing of 100 bodies of 4 MiB each read 400 MiB to show 200
        # characters of each (SQLite's and PostgreSQL's substr and length count bytes of a blob)
        where, params = self._inbox_filter(status, limit, channels)
        rows = self.execute(
            f"SELECT {_NOT_BODY}, substr(body, 1, {int(head)}) AS body, length(body) AS size"
            f" FROM inbox WHERE {where} ORDER BY id DESC LIMIT :limit",
            params,
        )
        return [(self._inbox_item(row), row["size"]) for row in rows]

    def inbox_waiting(self, channel: str, conversation_key: str, *, received_by: datetime) -> bool:
        # the conversation's pending items are the head of an index (few: its lane)
        row = self._one(
            "SELECT 1 AS found FROM inbox WHERE status = 'pending' AND channel = :channel"
            " AND conversation_key = :key AND received_at <= :by LIMIT 1",
            {
                "channel": channel,
                "key": conversation_key,
                "by": self.dialect.time(utc(received_by)),
            },
        )
        return row is not None

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        row = self._one("SELECT * FROM inbox WHERE id = :id", {"id": inbox_id})
        return self._inbox_item(row) if row else None
