"""Forgetting a client and purging old records in a SQL store: the rows behind
:meth:`SQLState.forget_client <rulekit.store.sql.state.SQLState.forget_client>` (the walk and
what is erased are :mod:`rulekit.store.erasure`'s) and the SQL of
:meth:`~rulekit.store.sql.state.SQLState.purge`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rulekit.store.codec import from_json
from rulekit.store.erasure import (
    PURGE_KINDS,
    AttemptRow,
    ConversationRow,
    EventRow,
    InboxRow,
    JobRow,
    TimerRow,
)
from rulekit.store.erasure import forget_client as forget_walk
from rulekit.store.forms import PersonalValues

if TYPE_CHECKING:
    from rulekit.store.sql.state import SQLState

SAME_CHANNEL = "(CAST(:channel AS TEXT) IS NULL OR channel = :channel)"


def id_tokens(client_id: str) -> list[bytes]:
    """How a JSON body names the client id: as a string (quoted), or, for a number (a Telegram
    user's id), as the whole number value of a key that says it is an id (``"id"``,
    ``"user_id"``, ``"chatId"``: the user who wrote, one whose message was forwarded...). An
    id's digits inside another number (a date, an update id: an early Telegram user's id has
    five digits) do not name it, nor does a number of another kind equal to it: a Telegram
    user's id has ten digits, as the date of every update has, and a width or a file's size
    may be any number (another user's update dated that very second was erased)."""
    tokens = [json.dumps(client_id).encode(), json.dumps(client_id, ensure_ascii=False).encode()]
    if client_id.isascii() and client_id.isdigit():
        digits = client_id.encode()
        after = (b",", b" ", b"}", b"\n", b"\r")
        before = (b'id":', b'id": ', b'Id":', b'Id": ')
        tokens += [a + digits + b for a in before for b in after]
    return list(dict.fromkeys(tokens))


def forget_client(state: SQLState, client_id: str, channel: str | None) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.forget_client`."""
    return forget_walk(SQLForgetRows(state), client_id, channel)


class SQLForgetRows:
    """:class:`rulekit.store.erasure.ForgetRows` over one SQL transaction. Where the dialect
    says so (PostgreSQL), rows read are locked: a daemon processing this client's next event
    waits rather than overwrite the erasure with what it read before."""

    def __init__(self, state: SQLState) -> None:
        self.state = state
        self.dialect = state.dialect
        self.lock = state.dialect.for_update

    def clients(self, client_id: str, channel: str | None) -> list[dict[str, Any]]:
        rows = self.state.execute(
            f"SELECT data FROM clients WHERE id = :client AND {SAME_CHANNEL}{self.lock}",
            {"client": client_id, "channel": channel},
        ).fetchall()
        return [from_json(row["data"]) for row in rows]

    def delete_clients(self, client_id: str, channel: str | None) -> int:
        cursor = self.state.execute(
            f"DELETE FROM clients WHERE id = :client AND {SAME_CHANNEL}",
            {"client": client_id, "channel": channel},
        )
        return int(cursor.rowcount)

    def events(self, client_id: str, channel: str | None) -> list[EventRow]:
        client = self.dialect.json_text("data", "client", "id")
        rows = self.state.execute(
            "SELECT id, event_id, inbox_id, conversation_id, data, trace FROM events"
            f" WHERE {client} = :client AND {SAME_CHANNEL}{self.lock}",
            {"client": client_id, "channel": channel},
        ).fetchall()
        load = self.dialect.read_json
        return [
            EventRow(
                row["id"],
                row["event_id"],
                row["inbox_id"],
                row["conversation_id"],
                load(row["data"]),
                load(row["trace"]),
            )
            for row in rows
        ]

    def update_event(self, row: EventRow, data: dict[str, Any], trace: Any) -> None:
        self.state.execute(
            "UPDATE events SET data = :data, trace = :trace WHERE id = :id",
            {"data": self.dialect.json(data), "trace": self.dialect.json(trace), "id": row.key},
        )

    def conversations(
        self, client_id: str, ids: Sequence[str], channel: str | None
    ) -> list[ConversationRow]:
        rows = self.state.execute(
            f"SELECT channel, key, data FROM conversations WHERE {SAME_CHANNEL}"
            f" AND (key = :client OR {self.dialect.one_of('id', 'ids')}){self.lock}",
            {"client": client_id, "channel": channel, "ids": self.dialect.values(ids)},
        ).fetchall()
        return [ConversationRow(row["channel"], row["key"], from_json(row["data"])) for row in rows]

    def update_conversation(self, row: ConversationRow, data: dict[str, Any]) -> None:
        self.state.execute(
            "UPDATE conversations SET data = :data WHERE channel = :channel AND key = :key",
            {"data": self.dialect.json(data), "channel": row.channel, "key": row.key},
        )

    def timers(self, conversation_ids: Sequence[str], event_ids: Sequence[str]) -> list[TimerRow]:
        one_of = self.dialect.one_of
        rows = self.state.execute(
            "SELECT id, reason FROM timers WHERE reason IS NOT NULL AND reason <> ''"
            f" AND ({one_of('conversation_id', 'conversations')}"
            f" OR {one_of('trigger_event_id', 'events')} OR {one_of('by_event', 'events')})"
            f"{self.lock}",
            {
                "conversations": self.dialect.values(conversation_ids),
                "events": self.dialect.values(event_ids),
            },
        ).fetchall()
        return [TimerRow(row["id"], row["reason"]) for row in rows]

    def update_timer(self, row: TimerRow, reason: str | None) -> None:
        self.state.execute(
            "UPDATE timers SET reason = :reason WHERE id = :id", {"reason": reason, "id": row.id}
        )

    def forget_requests(self, conversation_ids: Sequence[str]) -> None:
        self.state.forget_request_answers(list(conversation_ids))

    def forget_paces(self, personal: PersonalValues) -> None:
        self.state.forget_paces(personal.found_in)

    def inbox(
        self,
        ids: Sequence[int],
        client_id: str,
        channel: str | None,
        conversations: Sequence[tuple[str, str]],
    ) -> list[InboxRow]:
        needles = {f"needle{n}": token for n, token in enumerate(id_tokens(client_id))}
        named = " OR ".join(self.dialect.bytes_contain("body", key) for key in needles)
        # (a channel's name holds no ":", so "<channel>:<key>" tells the pair)
        theirs = self.dialect.one_of("(channel || ':' || conversation_key)", "conversations")
        rows = self.state.execute(
            "SELECT id, length(body) > 0 AS has_body, error FROM inbox WHERE status <> 'pending'"
            f" AND ({self.dialect.one_of('id', 'ids')}"
            f"      OR ({SAME_CHANNEL} AND ({theirs} OR {named}))){self.lock}",
            {
                "ids": self.dialect.values(ids),
                "conversations": self.dialect.values([f"{c}:{k}" for c, k in conversations]),
                "channel": channel,
                **needles,
            },
        ).fetchall()
        return [InboxRow(row["id"], bool(row["has_body"]), row["error"]) for row in rows]

    def erase_inbox(self, row: InboxRow, error: str | None) -> None:
        self.state.execute(
            "UPDATE inbox SET body = :empty, error = :error WHERE id = :id",
            {"empty": b"", "error": error, "id": row.id},
        )

    def jobs(self, event_ids: Sequence[str]) -> list[JobRow]:
        rows = self.state.execute(
            "SELECT id, params, result, last_error, status, destination, lane,"
            " call_started_at IS NOT NULL AS in_call FROM outbox"
            f" WHERE {self.dialect.one_of('event_id', 'ids')}{self.lock}",
            {"ids": self.dialect.values(event_ids)},
        ).fetchall()
        load = self.dialect.read_json
        return [
            JobRow(
                row["id"],
                load(row["params"]),
                load(row["result"]),
                row["last_error"],
                row["status"],
                row["destination"],
                row["lane"],
                bool(row["in_call"]),
            )
            for row in rows
        ]

    def release_job(self, row: JobRow) -> None:
        self.state.execute(
            "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
            " WHERE id = :id AND status = 'pending' AND call_started_at IS NULL",
            {"id": row.id},
        )

    def update_job(
        self,
        row: JobRow,
        params: Any,
        result: Any,
        error: str | None,
        *,
        destination: str,
        lane: str,
        dead: bool = False,
    ) -> None:
        # dead: no longer claimable (a claim in progress records its outcome on pending
        # jobs only, so it cannot make it pending again)
        self.state.execute(
            "UPDATE outbox SET params = :params, result = :result, last_error = :error,"
            " destination = :destination, lane = :lane,"
            " status = CASE WHEN :dead = 1 THEN 'dead' ELSE status END"
            " WHERE id = :id",
            {
                "params": self.dialect.json(params),
                "result": self.dialect.json(result),
                "error": error,
                "destination": destination,
                "lane": lane,
                "dead": 1 if dead else 0,
                "id": row.id,
            },
        )

    def attempts(self, job_ids: Sequence[int]) -> list[AttemptRow]:
        rows = self.state.execute(
            f"SELECT id, result, error FROM attempts WHERE {self.dialect.one_of('job_id', 'ids')}",
            {"ids": self.dialect.values(job_ids)},
        ).fetchall()
        load = self.dialect.read_json
        return [AttemptRow(row["id"], load(row["result"]), row["error"]) for row in rows]

    def update_attempt(self, row: AttemptRow, result: Any, error: str | None) -> None:
        self.state.execute(
            "UPDATE attempts SET result = :result, error = :error WHERE id = :id",
            {"result": self.dialect.json(result), "error": error, "id": row.key},
        )


# events old enough whose jobs are all finished (pending work is never purged), oldest first;
# each read of what a purge deletes takes its rows locked, passing over those another session
# holds (PostgreSQL: ``FOR UPDATE SKIP LOCKED``, see purge)
OLD_EVENTS = (
    "SELECT e.event_id FROM events e WHERE e.processed_at < :before AND NOT EXISTS"
    " (SELECT 1 FROM outbox o WHERE o.event_id = e.event_id AND o.status = 'pending')"
    " ORDER BY e.processed_at LIMIT :limit{lock}"
)
OLD_ITEMS = (  # by the index inbox_finished_by_time
    "SELECT id FROM inbox WHERE received_at < :before AND status <> 'pending'"
    " ORDER BY received_at LIMIT :limit{lock}"
)
OLD_TIMERS = (  # by the index timers_finished_by_time
    "SELECT id FROM timers WHERE finished_at < :before AND status <> 'pending'"
    " ORDER BY finished_at LIMIT :limit{lock}"
)
ALL = 2**62
"""The limit of an unbounded purge."""


def purge(
    state: SQLState, events_before: datetime, payloads_before: datetime, batch: int | None = None
) -> dict[str, int]:
    """See :meth:`rulekit.store.base.Journal.purge`.

    What it deletes is read locked, passing over the rows another session holds (an erasure,
    another daemon's purge): they are left for the next round. A purge deletes an event's
    attempts and jobs before the event, while an erasure holds the event first and rewrites
    its attempts next; a purge that waited for an event an erasure held, having deleted its
    attempts, deadlocked with it (or failed at the lock timeout)."""
    counts = dict.fromkeys(PURGE_KINDS, 0)
    limit = ALL if batch is None else batch
    lock = state.dialect.skip_locked
    before = {"before": state.dialect.time(events_before), "limit": limit}
    rows = state.execute(OLD_EVENTS.format(lock=lock), before).fetchall()
    if rows:
        ids = {"ids": state.dialect.values([row["event_id"] for row in rows])}
        in_ids = state.dialect.one_of("event_id", "ids")
        counts["attempts"] = state.execute(
            f"DELETE FROM attempts WHERE job_id IN (SELECT id FROM outbox WHERE {in_ids})", ids
        ).rowcount
        counts["jobs"] = state.execute(f"DELETE FROM outbox WHERE {in_ids}", ids).rowcount
        # the rule matches (rulekit stats) go with their events
        state.execute(f"DELETE FROM rule_matches WHERE {in_ids}", ids)
        counts["events"] = state.execute(f"DELETE FROM events WHERE {in_ids}", ids).rowcount
    state.forget_past_paces()  # (not counted: the same as none)
    counts["timers"] = state.execute(
        f"DELETE FROM timers WHERE id IN ({OLD_TIMERS.format(lock=lock)})", before
    ).rowcount
    counts["inbox"] = state.execute(
        f"DELETE FROM inbox WHERE id IN ({OLD_ITEMS.format(lock=lock)})", before
    ).rowcount
    if counts["inbox"] >= limit:  # more to delete first: emptying their bodies is wasted
        return counts
    # a set-aside item keeps its body: it waits for a person to requeue it (emptied, it would
    # be set aside again, its event lost), until it goes whole with the audit trail above
    counts["payloads"] = state.execute(
        "UPDATE inbox SET body = :empty WHERE id IN (SELECT id FROM inbox"  # by the index
        " WHERE received_at < :before AND status <> 'pending' AND length(body) > 0"  # of payloads
        f" AND status <> 'failed' ORDER BY received_at LIMIT :limit{lock})",
        {"empty": b"", "before": state.dialect.time(payloads_before), "limit": limit},
    ).rowcount
    return counts
