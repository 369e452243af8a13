"""Forgetting a client and purging old records in a SQLite store (the SQL behind
:meth:`SQLiteState.forget_client <rulekit.store.sqlite_state.SQLiteState.forget_client>` and
:meth:`~rulekit.store.sqlite_state.SQLiteState.purge`). What is erased is decided by
:mod:`rulekit.store.erasure`; this module only finds and rewrites rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from rulekit.store.erasure import (
    FORGET_KINDS,
    PURGE_KINDS,
    forget_conversation_data,
    forget_event_data,
    personal_values,
    scrub,
)

if TYPE_CHECKING:
    from rulekit.store.sqlite_state import SQLiteState


def forget_client(state: SQLiteState, client_id: str, channel: str | None) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.forget_client`."""
    from rulekit.store.sqlite_state import from_json, to_json

    counts = dict.fromkeys(FORGET_KINDS, 0)
    clients = state.execute(
        "SELECT channel, data FROM clients WHERE id = ? AND (? IS NULL OR channel = ?)",
        (client_id, channel, channel),
    ).fetchall()
    events = state.execute(
        "SELECT id, event_id, inbox_id, conversation_id, channel, data, trace FROM events"
        " WHERE json_extract(data, '$.client.id') = ? AND (? IS NULL OR channel = ?)",
        (client_id, channel, channel),
    ).fetchall()
    event_data = {row["id"]: from_json(row["data"]) for row in events}
    personal = personal_values(
        [from_json(row["data"]) for row in clients], list(event_data.values())
    )

    counts["clients"] = state.execute(
        "DELETE FROM clients WHERE id = ? AND (? IS NULL OR channel = ?)",
        (client_id, channel, channel),
    ).rowcount

    for row in events:
        data, had_text = forget_event_data(event_data[row["id"]], personal)
        trace, _ = scrub(from_json(row["trace"]), personal)
        state.execute(
            "UPDATE events SET data = ?, trace = ? WHERE id = ?",
            (to_json(data), to_json(trace), row["id"]),
        )
        counts["events"] += 1
        counts["messages"] += had_text

    inbox_ids = to_json([row["inbox_id"] for row in events if row["inbox_id"] is not None])
    counts["payloads"] = state.execute(
        "UPDATE inbox SET body = X'' WHERE status != 'pending' AND length(body) > 0"
        " AND (id IN (SELECT value FROM json_each(?))"
        "      OR (instr(body, CAST(? AS BLOB)) > 0 AND (? IS NULL OR channel = ?)))",
        (inbox_ids, client_id, channel, channel),
    ).rowcount

    event_ids = to_json([row["event_id"] for row in events])
    jobs = state.execute(
        "SELECT id, params, result, last_error FROM outbox"
        " WHERE event_id IN (SELECT value FROM json_each(?))",
        (event_ids,),
    ).fetchall()
    for job in jobs:
        params, n_params = scrub(from_json(job["params"]), personal)
        result, n_result = scrub(from_json(job["result"]), personal)
        error, n_error = scrub(job["last_error"], personal)
        if n_params or n_result or n_error:
            state.execute(
                "UPDATE outbox SET params = ?, result = ?, last_error = ? WHERE id = ?",
                (to_json(params), None if result is None else to_json(result), error, job["id"]),
            )
            counts["jobs"] += 1
    attempts = state.execute(
        "SELECT id, result, error FROM attempts WHERE job_id IN"
        " (SELECT id FROM outbox WHERE event_id IN (SELECT value FROM json_each(?)))",
        (event_ids,),
    ).fetchall()
    for attempt in attempts:
        result, n_result = scrub(from_json(attempt["result"]), personal)
        error, n_error = scrub(attempt["error"], personal)
        if n_result or n_error:
            state.execute(
                "UPDATE attempts SET result = ?, error = ? WHERE id = ?",
                (None if result is None else to_json(result), error, attempt["id"]),
            )
            counts["attempts"] += 1

    conversation_ids = to_json(
        sorted({row["conversation_id"] for row in events if row["conversation_id"]})
    )
    conversations = state.execute(
        "SELECT channel, key, data FROM conversations WHERE (? IS NULL OR channel = ?)"
        " AND (key = ? OR id IN (SELECT value FROM json_each(?)))",
        (channel, channel, client_id, conversation_ids),
    ).fetchall()
    for row in conversations:
        data, changed = forget_conversation_data(from_json(row["data"]))
        if changed:
            state.execute(
                "UPDATE conversations SET data = ? WHERE channel = ? AND key = ?",
                (to_json(data), row["channel"], row["key"]),
            )
            counts["conversations"] += 1
    return counts


def purge(state: SQLiteState, events_before: datetime, payloads_before: datetime) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.purge`."""
    from rulekit.store.sqlite_state import ts

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
