"""Forgetting a client and purging old records in a PostgreSQL store (the SQL behind
:meth:`PostgresState.forget_client <rulekit.store.postgres_state.PostgresState.forget_client>` and
:meth:`~rulekit.store.postgres_state.PostgresState.purge`). What is erased is decided by
:mod:`rulekit.store.erasure`, as for SQLite; this module only finds and rewrites rows.
"""

from __future__ import annotations

import json
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
from rulekit.store.records import utc

if TYPE_CHECKING:
    from rulekit.store.postgres_state import PostgresState


def forget_client(state: PostgresState, client_id: str, channel: str | None) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.forget_client`."""
    from rulekit.store.postgres_state import to_json

    counts = dict.fromkeys(FORGET_KINDS, 0)
    where = {"client": client_id, "channel": channel}
    same_channel = "(%(channel)s::text IS NULL OR channel = %(channel)s)"
    clients = state.execute(
        f"SELECT channel, data FROM clients WHERE id = %(client)s AND {same_channel}", where
    ).fetchall()
    # Locked: a daemon processing this client's next event waits rather than overwrite the
    # erasure with what it read before.
    events = state.execute(
        "SELECT id, event_id, inbox_id, conversation_id, channel, data, trace FROM events"
        f" WHERE data -> 'client' ->> 'id' = %(client)s AND {same_channel} FOR UPDATE",
        where,
    ).fetchall()
    personal = personal_values(
        [json.loads(row["data"]) for row in clients], [row["data"] for row in events]
    )

    counts["clients"] = state.execute(
        f"DELETE FROM clients WHERE id = %(client)s AND {same_channel}", where
    ).rowcount

    for row in events:
        data, had_text = forget_event_data(row["data"], personal)
        trace, _ = scrub(row["trace"], personal)
        state.execute(
            "UPDATE events SET data = %s::json, trace = %s::json WHERE id = %s",
            (to_json(data), to_json(trace), row["id"]),
        )
        counts["events"] += 1
        counts["messages"] += had_text

    inbox_ids = [row["inbox_id"] for row in events if row["inbox_id"] is not None]
    counts["payloads"] = state.execute(
        "UPDATE inbox SET body = ''::bytea WHERE status <> 'pending' AND length(body) > 0"
        " AND (id = ANY(%(ids)s::bigint[]) OR (position(convert_to(%(client)s, 'UTF8') in body) > 0"
        f"      AND {same_channel}))",
        {**where, "ids": inbox_ids},
    ).rowcount

    event_ids = [row["event_id"] for row in events]
    jobs = state.execute(
        "SELECT id, params, result, last_error FROM outbox WHERE event_id = ANY(%s::text[])"
        " FOR UPDATE",
        (event_ids,),
    ).fetchall()
    for job in jobs:
        params, n_params = scrub(job["params"], personal)
        result, n_result = scrub(job["result"], personal)
        error, n_error = scrub(job["last_error"], personal)
        if n_params or n_result or n_error:
            state.execute(
                "UPDATE outbox SET params = %s::json, result = %s::json, last_error = %s"
                " WHERE id = %s",
                (to_json(params), None if result is None else to_json(result), error, job["id"]),
            )
            counts["jobs"] += 1
    attempts = state.execute(
        "SELECT id, result, error FROM attempts WHERE job_id IN"
        " (SELECT id FROM outbox WHERE event_id = ANY(%s::text[]))",
        (event_ids,),
    ).fetchall()
    for attempt in attempts:
        result, n_result = scrub(attempt["result"], personal)
        error, n_error = scrub(attempt["error"], personal)
        if n_result or n_error:
            state.execute(
                "UPDATE attempts SET result = %s::json, error = %s WHERE id = %s",
                (None if result is None else to_json(result), error, attempt["id"]),
            )
            counts["attempts"] += 1

    conversation_ids = sorted({row["conversation_id"] for row in events if row["conversation_id"]})
    conversations = state.execute(
        f"SELECT channel, key, data FROM conversations WHERE {same_channel}"
        " AND (key = %(client)s OR id = ANY(%(ids)s::text[])) FOR UPDATE",
        {**where, "ids": conversation_ids},
    ).fetchall()
    for row in conversations:
        data, changed = forget_conversation_data(json.loads(row["data"]))
        if changed:
            state.execute(
                "UPDATE conversations SET data = %s WHERE channel = %s AND key = %s",
                (to_json(data), row["channel"], row["key"]),
            )
            counts["conversations"] += 1
    return counts


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
