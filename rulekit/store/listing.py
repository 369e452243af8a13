"""Listing conversations: what the console's conversation list asks a store, and gets back.

A store keeps, for each conversation, when it last had an event (``active_at``: the time the
event was recorded) and the client of that event, so that the list is read by index, newest
activity first, and pages with a cursor (the last entry's position) however long history is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from rulekit.event import Client, Conversation

MAX_PAGE = 200
"""The most conversations one page may hold."""
MAX_TEXT = 200
"""The longest search text a query may hold."""


@dataclass(frozen=True)
class Position:
    """Where a conversation stands in the list: entries are ordered by these, descending."""

    active_at: datetime
    channel: str
    key: str


@dataclass(frozen=True)
class ConversationQuery:
    """Which conversations to list.

    ``channels`` limits the list to those channels (``None``: every channel); ``assignee`` keeps
    the conversations of one agent (an email, any case), ``unassigned`` those of nobody;
    ``tag`` those carrying a tag; ``text`` those whose client's name, display name, email or
    phone, or whose id, contains it (any case). ``after`` is the position of the last entry of
    the previous page.
    """

    channels: frozenset[str] | None = None
    status: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    tag: str | None = None
    text: str | None = None
    after: Position | None = None
    limit: int = 50


@dataclass(frozen=True)
class ConversationSummary:
    """One entry of the list: the conversation, its client as last known, and its position."""

    channel: str
    key: str
    conversation: Conversation
    client: Client | None
    position: Position


def like_pattern(text: str) -> str:
    """``text`` as a ``LIKE ... ESCAPE '\\'`` pattern matching values that contain it."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def matches_text(conversation: Conversation, client: Client | None, text: str) -> bool:
    """Whether the search ``text`` is found (any case) where :class:`ConversationQuery` says."""
    needle = text.lower()
    values = [conversation.id]
    if client is not None:
        values += [client.name, client.display_name, client.email, client.phone]
    return any(needle in value.lower() for value in values if value)
