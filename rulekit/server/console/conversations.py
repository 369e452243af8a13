"""What the workspace API reads about conversations: the list (newest activity first, one
page at a time) and one conversation with its client panel, thread, events and actions.

Plain blocking functions over one read-only unit of work (:meth:`JournaledStore.reading`:
never a write lock); call them in a worker thread from async code. Everything is read by
index (the conversation list's activity index, a conversation's events by its id).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rulekit.server.console.journal import event_summary, known, shortened
from rulekit.server.console.team import TeamView
from rulekit.store.base import JournaledState
from rulekit.store.listing import ConversationQuery, ConversationSummary, Position
from rulekit.store.records import EventRecord, Job

PAGE_EVENTS = 100
"""How many events a page of the conversation view holds at most."""
PAGE_BYTES = 1_000_000
"""How many bytes of JSON a page's events (their thread entries, summaries and actions)
take at most, however long its messages: one event is always taken, each of its texts cut
to :data:`MAX_THREAD_TEXT`."""
READ_BUDGET = 8 * PAGE_BYTES
"""How many characters of stored events (their data and trace) a page reads at most (always
one event): a client's messages of megabytes are not all read to show a page of them cut."""
MAX_THREAD_TEXT = 20_000
"""Characters of each text of the conversation view (a thread's message, a field of the
client panel or of the conversation, and of what a change of them answers; ``rulekit why
--show-content`` has them whole). No real chat message comes near,
nor anything an agent may write in the panel; a client's 500 messages of 4 MB made a 2 GB
answer."""


class BadCursor(ValueError):
    """A cursor this daemon did not hand out."""


def encode_cursor(position: Position) -> str:
    """An opaque cursor for the entries after ``position``."""
    data = [position.active_at.isoformat(), position.channel, position.key]
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> Position:
    """The position a cursor of :func:`encode_cursor` names; :class:`BadCursor` otherwise."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        active_at, channel, key = json.loads(raw)
        when = datetime.fromisoformat(active_at)
        if not isinstance(channel, str) or not isinstance(key, str) or when.tzinfo is None:
            raise ValueError
        when.astimezone(UTC)  # the stores compare in UTC: a forged time may fall outside
        if "\x00" in channel or "\x00" in key:  # no stored name holds one
            raise ValueError
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise BadCursor("not a cursor of this list; start again without one") from None
    return Position(when, channel, key)


@dataclass(frozen=True)
class Page:
    conversations: list[dict[str, Any]]
    next_cursor: str | None


def list_page(state: JournaledState, query: ConversationQuery, team: TeamView) -> Page:
    """One page of the list (the agents ``team``'s viewer may not see unnamed);
    ``next_cursor`` is set when more may follow."""
    found = state.list_conversations(query)
    more = len(found) == query.limit
    return Page(
        [list_entry(summary, team) for summary in found],
        encode_cursor(found[-1].position) if more and found else None,
    )


def list_entry(summary: ConversationSummary, team: TeamView) -> dict[str, Any]:
    # each text cut as the event list's: the page a client says they are on may be megabytes
    conversation = shortened(team.conversation(summary.conversation.model_dump(mode="json")))
    client = summary.client.model_dump(mode="json") if summary.client else {}
    return {
        "id": summary.conversation.id,
        "channel": summary.channel,
        "last_activity_at": summary.position.active_at.isoformat(),
        "conversation": conversation,
        "client": {
            key: shortened(client.get(key))
            for key in ("id", "name", "display_name", "email", "phone")
        },
    }


def locate(
    state: JournaledState, conversation_id: str, channels: Collection[str]
) -> tuple[str, str | None] | None:
    """The channel of a conversation (among ``channels``) and its provider key, if stored."""
    prefix = conversation_id.split(":", 1)[0]
    ordered = sorted(channels, key=lambda channel: channel != prefix)  # the likely one first
    for channel in ordered:
        found = state.find_conversation(channel, conversation_id)
        if found is not None:
            return channel, found[0]
    for channel in ordered:
        if state.conversation_events(channel, conversation_id, limit=1):
            return channel, None
    return None


def view(
    state: JournaledState,
    conversation_id: str,
    channels: Collection[str],
    team: TeamView,
    *,
    before: str | None = None,
    after: str | None = None,
) -> dict[str, Any] | None:
    """A page of a conversation: its state, the client panel, and of the page's events (at
    most :data:`PAGE_EVENTS`, their entries at most :data:`PAGE_BYTES` of JSON, always at
    least one) its thread (oldest first), the events (newest first, with their jobs and the
    team their rules read) and all their actions, as ``team``'s viewer may see them (the
    agents they may not see unnamed); None when it is unknown (or not on ``channels``).

    The page holds the latest events; with ``before`` (an event id) those just before that
    event (``older`` names the cursor of the next older page, None at the first event); with
    ``after`` those just after it, oldest first (``newer`` is set when more followed them).
    :class:`~rulekit.store.history.NotInConversation` when the cursor is not one of the
    conversation's events."""
    located = locate(state, conversation_id, channels)
    if located is None:
        return None
    channel, key = located
    read, more = state.conversation_page(
        channel,
        conversation_id,
        limit=PAGE_EVENTS,
        budget=READ_BUDGET,
        before=before,
        after=after,
    )  # in the order the page is filled: away from the cursor (newest first without one)
    jobs = state.jobs_of_events([record.event_id for record in read])  # one query
    taken: list[tuple[EventRecord, dict[str, Any] | None, dict[str, Any], list[Any]]] = []
    size = 0
    for record in read:
        entries = page_entries(record, jobs[record.event_id], team)
        size += len(json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode())
        if taken and size > PAGE_BYTES:
            break
        taken.append((record, *entries))
    more = more or len(taken) < len(read)
    if after is not None:
        taken.reverse()  # newest first, as the others
    records = [record for record, *_ in taken]
    conversation: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for record in reversed(records):  # oldest first: later events know more
        conversation.update(known(record.data.get("conversation")))
        client.update(known(record.data.get("client")))
    stored = state.get_conversation(channel, key) if key is not None else None
    if stored is not None:
        conversation.update(settled(stored.model_dump(mode="json"), STATE_FIELDS))
    client_id = client.get("id")
    if client_id:
        stored_client = state.get_client(channel, client_id)
        if stored_client is not None:
            client.update(settled(stored_client.model_dump(mode="json"), CONTACT_FIELDS))
    older = records[-1].event_id if more and after is None and records else None
    return {
        "id": conversation_id,
        "channel": channel,
        "conversation": shortened(
            team.conversation({**conversation, "id": conversation_id}), MAX_THREAD_TEXT
        ),
        "client": shortened(client, MAX_THREAD_TEXT),
        "thread": [entry for _, entry, _, _ in reversed(taken) if entry is not None],
        "events": [summary for _, _, summary, _ in taken],
        "actions": [action for _, _, _, actions in taken for action in actions],
        "older": older,
        "newer": records[0].event_id if more and after is not None and records else None,
        "truncated": older is not None,
    }


def page_entries(
    record: EventRecord, jobs: list[Job], team: TeamView
) -> tuple[dict[str, Any] | None, dict[str, Any], list[Any]]:
    """What one event adds to a page: its thread entry (None without a message), its
    summary and its actions."""
    entry = thread_entry(record, jobs)
    return (
        team.thread_entry(entry) if entry is not None else None,
        {"event_id": record.event_id, **event_summary(record, jobs, team)},
        [team.action({**action_entry(job), "event": record.event}) for job in jobs],
    )


STATE_FIELDS = ("status", "group", "assignee", "tags", "priority", "fields")
"""What the stored conversation says even when empty (its tags all removed, nobody assigned)."""
CONTACT_FIELDS = ("name", "email", "phone", "notes")
"""What the stored client says even when empty (an agent cleared it)."""


def settled(stored: dict[str, Any], authoritative: tuple[str, ...]) -> dict[str, Any]:
    """What a stored record adds to what the events said: what it knows, and its
    ``authoritative`` fields as they are, empty or not."""
    return {**known(stored), **{name: stored.get(name) for name in authoritative}}


def thread_entry(record: EventRecord, jobs: list[Job]) -> dict[str, Any] | None:
    """The message an event carries, as the thread shows it (None when it carries none).

    A reply written in the console shows how its delivery stands (``delivery``: the job that
    sends it: ``pending``, ``done`` or ``dead`` with the error)."""
    message = record.data.get("message") or {}
    if not message.get("text") and not message.get("id"):
        return None
    agent = record.data.get("agent") or {}
    entry: dict[str, Any] = {
        "event_id": record.event_id,
        "event": record.event,
        "message_id": message.get("id"),
        "author": message.get("author"),
        "agent": message.get("agent") or agent.get("email"),
        "agent_name": agent.get("name"),
        "text": shortened(message.get("text"), MAX_THREAD_TEXT),
        "at": message.get("created_at") or record.data.get("occurred_at"),
        "origin": record.data.get("origin"),
        "recovered": bool(record.data.get("recovered")),
    }
    delivery = next((job for job in jobs if job.rule == CONSOLE_RULE), None)
    if delivery is not None:
        entry["delivery"] = {
            "job_id": delivery.id,
            "status": delivery.status,
            "attempts": delivery.attempts,
            "error": delivery.last_error,
        }
    return entry


CONSOLE_RULE = "(console)"
"""The rule name of the jobs the console enqueues itself (a reply, a change of client data)."""


def action_entry(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "event_id": job.event_id,
        "rule": job.rule,
        "action": job.action,
        "destination": job.destination,
        "status": job.status,
        "attempts": job.attempts,
        "error": job.last_error,
        "result": job.result,
    }
