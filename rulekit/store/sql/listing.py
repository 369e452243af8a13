"""The SQL of :mod:`rulekit.store.listing`: the conversation list, read by its activity index
(``conversations_by_activity``), for both databases."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rulekit.event import Client, Conversation
from rulekit.store.listing import (
    MAX_PAGE,
    ConversationQuery,
    ConversationSummary,
    Position,
    like_pattern,
)

if TYPE_CHECKING:
    from rulekit.store.sql.state import SQLState

CLIENT_TEXT = ("name", "display_name", "email", "phone")

TOUCH = (
    "UPDATE conversations SET active_at = :now, client_id = coalesce(:client, client_id)"
    " WHERE id = :conversation AND channel = :channel"
)
"""A conversation had an event recorded ``now``, of client ``client``."""


def list_conversations(state: SQLState, query: ConversationQuery) -> list[ConversationSummary]:
    """See :meth:`rulekit.store.base.State.list_conversations`."""
    dialect = state.dialect
    where: list[str] = []
    params: dict[str, Any] = {"limit": max(1, min(query.limit, MAX_PAGE))}
    if query.channels is not None:
        if not query.channels:
            return []
        where.append(dialect.one_of("c.channel", "channels"))
        params["channels"] = dialect.values(sorted(query.channels))
    if query.status == "open":  # open until closed: a conversation without a status too
        where.append("(c.status IS NULL OR c.status <> 'closed')")
    elif query.status is not None:
        where.append("c.status = :status")
        params["status"] = query.status
    if query.unassigned:
        where.append("c.assignee IS NULL")
    elif query.assignee is not None:
        where.append("c.assignee = :assignee")
        params["assignee"] = query.assignee.lower()
    if query.tag is not None:
        where.append(dialect.json_list_has(dialect.json_document("c.data"), "tags", "tag"))
        params["tag"] = query.tag
    if query.text:
        client = dialect.json_document("k.data")
        fields = " OR ".join(
            f"lower({dialect.json_text(client, name)}) LIKE :text ESCAPE '\\'"
            for name in CLIENT_TEXT
        )
        where.append(f"(lower(c.id) LIKE :text ESCAPE '\\' OR {fields})")
        params["text"] = like_pattern(query.text)
    if query.after is not None:
        where.append("(c.active_at, c.channel, c.key) < (:after_at, :after_channel, :after_key)")
        params["after_at"] = dialect.time(query.after.active_at)
        params["after_channel"] = query.after.channel
        params["after_key"] = query.after.key
    rows = state.execute(
        "SELECT c.channel, c.key, c.data, c.active_at, k.data AS client FROM conversations c"
        " LEFT JOIN clients k ON k.channel = c.channel AND k.id = c.client_id"
        f" WHERE {' AND '.join(where) or '1 = 1'}"
        " ORDER BY c.active_at DESC, c.channel DESC, c.key DESC LIMIT :limit",
        params,
    ).fetchall()
    return [
        ConversationSummary(
            channel=row["channel"],
            key=row["key"],
            conversation=Conversation.model_validate_json(row["data"]),
            client=Client.model_validate_json(row["client"]) if row["client"] else None,
            position=Position(dialect.read_time(row["active_at"]), row["channel"], row["key"]),
        )
        for row in rows
    ]
