"""Forgetting a client and purging old records in a PostgreSQL store: the rows behind
:meth:`PostgresState.forget_client <rulekit.store.postgres_state.PostgresState.forget_client>`
(the walk and what is erased are :mod:`rulekit.store.erasure`'s, as for SQLite) and the SQL of
:meth:`~rulekit.store.postgres_state.PostgresState.purge`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rulekit.store.codec import to_json
from rulekit.store.erasure import (
    PURGE_KINDS,
    AttemptRow,
    ConversationRow,
    EventRow,
    InboxRow,
    JobRow,
)
from rulekit.store.erasure import forget_client as forget_walk
from rulekit.store.records import utc

if TYPE_CHECKING:
    from rulekit.store.postgres_state import PostgresState

SAME_CHANNEL = "(%(channel)s::text IS NULL OR channel = %(channel)s)"


def forget_client(state: PostgresState, client_id: str, channel: str | None) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.forget_client`."""
    return forget_walk(PostgresForgetRows(state), client_id, channel)


class PostgresForgetRows:
    """:class:`rulekit.store.erasure.ForgetRows` over one PostgreSQL transaction. Rows read
    are locked: a daemon processing this client's next event waits rather than overwrite the
    erasure with what it read before."""

    def __init__(self, state: PostgresState) -> None:

        self.state = state
        self.dump = to_json

    def _json(self, value: Any) -> str | None:
        return None if value is None else self.dump(value)

    def clients(self, client_id: str, channel: str | None) -> list[dict[str, Any]]:
        rows = self.state.execute(
            f"SELECT data FROM clients WHERE id = %(client)s AND {SAME_CHANNEL} FOR UPDATE",
            {"client": client_id, "channel": channel},
        ).fetchall()
        return [json.loads(row["data"]) for row in rows]

    def delete_clients(self, client_id: str, channel: str | None) -> int:
        return self.state.execute(
            f"DELETE FROM clients WHERE id = %(client)s AND {SAME_CHANNEL}",
            {"client": client_id, "channel": channel},
        ).rowcount

    def events(self, client_id: str, channel: str | None) -> list[EventRow]:
        rows = self.state.execute(
            "SELECT id, event_id, inbox_id, conversation_id, data, trace FROM events"
            f" WHERE data -> 'client' ->> 'id' = %(client)s AND {SAME_CHANNEL} FOR UPDATE",
            {"client": client_id, "channel": channel},
        ).fetchall()
        return [
            EventRow(
                row["id"],
                row["event_id"],
                row["inbox_id"],
                row["conversation_id"],
                row["data"],
                row["trace"],
            )
            for row in rows
        ]

    def update_event(self, row: EventRow, data: dict[str, Any], trace: Any) -> None:
        self.state.execute(
            "UPDATE events SET data = %s::json, trace = %s::json WHERE id = %s",
            (self.dump(data), self.dump(trace), row.key),
        )

    def conversations(
        self, client_id: str, ids: Sequence[str], channel: str | None
    ) -> list[ConversationRow]:
        rows = self.state.execute(
            f"SELECT channel, key, data FROM conversations WHERE {SAME_CHANNEL}"
            " AND (key = %(client)s OR id = ANY(%(ids)s::text[])) FOR UPDATE",
            {"client": client_id, "channel": channel, "ids": list(ids)},
        ).fetchall()
        return [
            ConversationRow(row["channel"], row["key"], json.loads(row["data"])) for row in rows
        ]

    def update_conversation(self, row: ConversationRow, data: dict[str, Any]) -> None:
        self.state.execute(
            "UPDATE conversations SET data = %s WHERE channel = %s AND key = %s",
            (self.dump(data), row.channel, row.key),
        )

    def inbox(self, ids: Sequence[int], client_id: str, channel: str | None) -> list[InboxRow]:
        rows = self.state.execute(
            "SELECT id, length(body) > 0 AS has_body, error FROM inbox WHERE status <> 'pending'"
            " AND (id = ANY(%(ids)s::bigint[])"
            f"      OR ({SAME_CHANNEL} AND (conversation_key = %(client)s"
            "           OR position(convert_to(%(client)s, 'UTF8') in body) > 0)))"
            " FOR UPDATE",
            {"ids": list(ids), "client": client_id, "channel": channel},
        ).fetchall()
        return [InboxRow(row["id"], bool(row["has_body"]), row["error"]) for row in rows]

    def erase_inbox(self, row: InboxRow, error: str | None) -> None:
        self.state.execute(
            "UPDATE inbox SET body = ''::bytea, error = %s WHERE id = %s", (error, row.id)
        )

    def jobs(self, event_ids: Sequence[str]) -> list[JobRow]:
        rows = self.state.execute(
            "SELECT id, params, result, last_error FROM outbox WHERE event_id = ANY(%s::text[])"
            " FOR UPDATE",
            (list(event_ids),),
        ).fetchall()
        return [JobRow(row["id"], row["params"], row["result"], row["last_error"]) for row in rows]

    def update_job(self, row: JobRow, params: Any, result: Any, error: str | None) -> None:
        self.state.execute(
            "UPDATE outbox SET params = %s::json, result = %s::json, last_error = %s WHERE id = %s",
            (self.dump(params), self._json(result), error, row.id),
        )

    def attempts(self, job_ids: Sequence[int]) -> list[AttemptRow]:
        rows = self.state.execute(
            "SELECT id, result, error FROM attempts WHERE job_id = ANY(%s::bigint[])",
            (list(job_ids),),
        ).fetchall()
        return [AttemptRow(row["id"], row["result"], row["error"]) for row in rows]

    def update_attempt(self, row: AttemptRow, result: Any, error: str | None) -> None:
        self.state.execute(
            "UPDATE attempts SET result = %s::json, error = %s WHERE id = %s",
            (self._json(result), error, row.key),
        )


def purge(
    state: PostgresState, events_before: datetime, payloads_before: datetime
) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.purge`."""
    counts = dict.fromkeys(PURGE_KINDS, 0)
    before = {"before": utc(events_before)}
    # events old enough whose jobs are all finished (pending work is never purged)
    old_events = (
        "SELECT e.event_id FROM events e WHERE e.processed_at < %(before)s AND NOT EXISTS"
        " (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id AND o.status = 'pending')"
    )
    counts["attempts"] = state.execute(
        "DELETE FROM attempts WHERE job_id IN"
        f" (SELECT id FROM outbox WHERE event_id IN ({old_events}))",
        before,
    ).rowcount
    counts["jobs"] = state.execute(
        f"DELETE FROM outbox WHERE event_id IN ({old_events})", before
    ).rowcount
    counts["events"] = state.execute(
        f"DELETE FROM events WHERE event_id IN ({old_events})", before
    ).rowcount
    counts["inbox"] = state.execute(
        "DELETE FROM inbox WHERE received_at < %(before)s AND status <> 'pending'", before
    ).rowcount
    counts["payloads"] = state.execute(
        "UPDATE inbox SET body = ''::bytea WHERE received_at < %s AND status <> 'pending'"
        " AND length(body) > 0",
        (utc(payloads_before),),
    ).rowcount
    return counts
