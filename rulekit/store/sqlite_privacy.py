"""Forgetting a client and purging old records in a SQLite store: the rows behind
:meth:`SQLiteState.forget_client <rulekit.store.sqlite_state.SQLiteState.forget_client>` (the
walk and what is erased are :mod:`rulekit.store.erasure`'s) and the SQL of
:meth:`~rulekit.store.sqlite_state.SQLiteState.purge`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rulekit.store.codec import from_json, to_json, ts
from rulekit.store.erasure import (
    PURGE_KINDS,
    AttemptRow,
    ConversationRow,
    EventRow,
    InboxRow,
    JobRow,
)
from rulekit.store.erasure import forget_client as forget_walk

if TYPE_CHECKING:
    from rulekit.store.sqlite_state import SQLiteState

SAME_CHANNEL = "(? IS NULL OR channel = ?)"


def forget_client(state: SQLiteState, client_id: str, channel: str | None) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.forget_client`."""
    return forget_walk(SQLiteForgetRows(state), client_id, channel)


class SQLiteForgetRows:
    """:class:`rulekit.store.erasure.ForgetRows` over one SQLite transaction."""

    def __init__(self, state: SQLiteState) -> None:

        self.state = state
        self.load = from_json
        self.dump = to_json

    def _json(self, value: Any) -> str | None:
        return None if value is None else self.dump(value)

    def clients(self, client_id: str, channel: str | None) -> list[dict[str, Any]]:
        rows = self.state.execute(
            f"SELECT data FROM clients WHERE id = ? AND {SAME_CHANNEL}",
            (client_id, channel, channel),
        ).fetchall()
        return [self.load(row["data"]) for row in rows]

    def delete_clients(self, client_id: str, channel: str | None) -> int:
        return self.state.execute(
            f"DELETE FROM clients WHERE id = ? AND {SAME_CHANNEL}", (client_id, channel, channel)
        ).rowcount

    def events(self, client_id: str, channel: str | None) -> list[EventRow]:
        rows = self.state.execute(
            "SELECT id, event_id, inbox_id, conversation_id, data, trace FROM events"
            f" WHERE json_extract(data, '$.client.id') = ? AND {SAME_CHANNEL}",
            (client_id, channel, channel),
        ).fetchall()
        return [
            EventRow(
                row["id"],
                row["event_id"],
                row["inbox_id"],
                row["conversation_id"],
                self.load(row["data"]),
                self.load(row["trace"]),
            )
            for row in rows
        ]

    def update_event(self, row: EventRow, data: dict[str, Any], trace: Any) -> None:
        self.state.execute(
            "UPDATE events SET data = ?, trace = ? WHERE id = ?",
            (self.dump(data), self.dump(trace), row.key),
        )

    def conversations(
        self, client_id: str, ids: Sequence[str], channel: str | None
    ) -> list[ConversationRow]:
        rows = self.state.execute(
            f"SELECT channel, key, data FROM conversations WHERE {SAME_CHANNEL}"
            " AND (key = ? OR id IN (SELECT value FROM json_each(?)))",
            (channel, channel, client_id, self.dump(list(ids))),
        ).fetchall()
        return [ConversationRow(row["channel"], row["key"], self.load(row["data"])) for row in rows]

    def update_conversation(self, row: ConversationRow, data: dict[str, Any]) -> None:
        self.state.execute(
            "UPDATE conversations SET data = ? WHERE channel = ? AND key = ?",
            (self.dump(data), row.channel, row.key),
        )

    def inbox(self, ids: Sequence[int], client_id: str, channel: str | None) -> list[InboxRow]:
        rows = self.state.execute(
            "SELECT id, length(body) > 0 AS has_body, error FROM inbox WHERE status != 'pending'"
            " AND (id IN (SELECT value FROM json_each(?))"
            f"      OR ({SAME_CHANNEL} AND (conversation_key = ?"
            "                              OR instr(body, CAST(? AS BLOB)) > 0)))",
            (self.dump(list(ids)), channel, channel, client_id, client_id),
        ).fetchall()
        return [InboxRow(row["id"], bool(row["has_body"]), row["error"]) for row in rows]

    def erase_inbox(self, row: InboxRow, error: str | None) -> None:
        self.state.execute("UPDATE inbox SET body = X'', error = ? WHERE id = ?", (error, row.id))

    def jobs(self, event_ids: Sequence[str]) -> list[JobRow]:
        rows = self.state.execute(
            "SELECT id, params, result, last_error FROM outbox"
            " WHERE event_id IN (SELECT value FROM json_each(?))",
            (self.dump(list(event_ids)),),
        ).fetchall()
        return [
            JobRow(row["id"], self.load(row["params"]), self.load(row["result"]), row["last_error"])
            for row in rows
        ]

    def update_job(self, row: JobRow, params: Any, result: Any, error: str | None) -> None:
        self.state.execute(
            "UPDATE outbox SET params = ?, result = ?, last_error = ? WHERE id = ?",
            (self.dump(params), self._json(result), error, row.id),
        )

    def attempts(self, job_ids: Sequence[int]) -> list[AttemptRow]:
        rows = self.state.execute(
            "SELECT id, result, error FROM attempts"
            " WHERE job_id IN (SELECT value FROM json_each(?))",
            (self.dump(list(job_ids)),),
        ).fetchall()
        return [AttemptRow(row["id"], self.load(row["result"]), row["error"]) for row in rows]

    def update_attempt(self, row: AttemptRow, result: Any, error: str | None) -> None:
        self.state.execute(
            "UPDATE attempts SET result = ?, error = ? WHERE id = ?",
            (self._json(result), error, row.key),
        )


def purge(state: SQLiteState, events_before: datetime, payloads_before: datetime) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.purge`."""

    counts = dict.fromkeys(PURGE_KINDS, 0)
    before = ts(events_before)
    # events old enough whose jobs are all finished (pending work is never purged)
    old_events = (
        "SELECT e.event_id FROM events e WHERE e.processed_at < ? AND NOT EXISTS"
        " (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id AND o.status = 'pending')"
    )
    counts["attempts"] = state.execute(
        "DELETE FROM attempts WHERE job_id IN"
        f" (SELECT id FROM outbox WHERE event_id IN ({old_events}))",
        (before,),
    ).rowcount
    counts["jobs"] = state.execute(
        f"DELETE FROM outbox WHERE event_id IN ({old_events})", (before,)
    ).rowcount
    counts["events"] = state.execute(
        f"DELETE FROM events WHERE event_id IN ({old_events})", (before,)
    ).rowcount
    counts["inbox"] = state.execute(
        "DELETE FROM inbox WHERE received_at < ? AND status != 'pending'", (before,)
    ).rowcount
    counts["payloads"] = state.execute(
        "UPDATE inbox SET body = X'' WHERE received_at < ? AND status != 'pending'"
        " AND length(body) > 0",
        (ts(payloads_before),),
    ).rowcount
    return counts
