"""Erasing a client's personal data from stored records: one walk for every store.

:meth:`Journal.forget_client <rulekit.store.base.Journal.forget_client>` is :func:`forget_client`
over the store's :class:`ForgetRows` (how that store finds and rewrites rows), so what
"forgotten" means does not depend on the backend:

* **personal values** (:func:`personal_values`) are the client's name, display name, email,
  phone, notes, IP address and custom field values, the page URL of the client's conversation,
  and the texts of the messages of events about the client;
* an audit record's ``client`` keeps only its ``id``; its message text and conversation page
  are dropped;
* every other string of the client's records (the event, its trace — rendered templates,
  condition errors, reasons —, its jobs' params, results, errors, destinations and lanes,
  their attempts' results and errors, inbox errors, conversation fields) that holds a personal
  value **in any stored form** (:mod:`rulekit.store.forms`: escaped for a markup, JSON-escaped,
  URL-encoded, other case) becomes :data:`FORGOTTEN`, and so does every object key holding one
  (the trace keeps the email a rule passed to ``team.open_count()`` as a key) and every number
  that is one (a chat id a service's answer repeats). Rule and action names stay. The pacing
  daemons share for a destination holding one is forgotten
  (:meth:`~rulekit.store.outbox.Outbox.forget_paces`);
* a job still to be sent whose parameters quoted the client becomes a dead letter
  (:data:`NOT_SENT`): sent, it would say ``[forgotten]`` where it said something of them. It
  cannot be retried (nor can a dead letter whose parameters were erased). A job whose call is
  under way becomes one too (:data:`CALL_UNDER_WAY`), and its call's outcome is not recorded
  (nor the events its action emitted). Any other job still to be sent has its claim
  withdrawn, and the trace of each erased event is marked (:data:`ERASED_MARK`): a daemon
  reads the job and its event from the store again before the call, not as it held them
  before the erasure;
* the reasons of the timers of the client's conversations (why one ended: its ``unless:``
  failed, quoting what it read) are scrubbed likewise;
* inbox bodies of those events (and done or failed bodies of the client's conversation or
  naming the client id) are emptied; a conversation loses its page.

The client id is kept: it is the provider's pseudonym for the visitor (Chatra's random id),
and what the audit trail, the conversation key, cooldowns and the inbox's ordering key use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rulekit.event import FORGOTTEN
from rulekit.store.forms import MIN_VALUE_LENGTH, PersonalValues
from rulekit.store.scrubbing import (
    TRACE_KEPT,
    erased_params,
    forget_conversation_data,
    forget_event_data,
    personal_values,
    scrub,
)

__all__ = [
    "CALL_UNDER_WAY",
    "ERASED_MARK",
    "ERASURE_ERRORS",
    "FORGET_KINDS",
    "FORGOTTEN",
    "MIN_VALUE_LENGTH",
    "NOT_SENT",
    "PURGE_KINDS",
    "ForgetRows",
    "erased_params",
    "forget_client",
    "personal_values",
    "scrub",
]


NOT_SENT = "not sent: its parameters quoted the client's personal data, erased by rulekit forget"
"""The error of a job that was still to be sent when erasure rewrote its parameters: it is a
dead letter, and not retryable (:func:`erased_params`)."""

CALL_UNDER_WAY = (
    "its call was under way when rulekit forget erased the client's personal data:"
    " its outcome is not recorded"
)
"""The error of a job whose call was under way when erasure ran: it is a dead letter, and
its call's outcome is not recorded (what the service answered, and the events its action
emitted, may quote the client's data as it was before)."""

ERASURE_ERRORS: tuple[str, ...] = (NOT_SENT, CALL_UNDER_WAY)
"""The errors erasure gives a job it stops: the outcome of a call of such a job, reported
later, is not recorded (:meth:`~rulekit.store.outbox.Outbox.record_attempt`)."""

ERASED_MARK = "forgotten"
"""The key erasure sets (to ``true``) in the trace of each event it erased: a daemon holding
the event in memory (handed over by its processor, or kept for the event's jobs) reads it
again from the store."""

FORGET_KINDS: tuple[str, ...] = (
    "clients",
    "conversations",
    "events",
    "messages",
    "payloads",
    "jobs",
    "attempts",
)
"""The keys of :meth:`Journal.forget_client`'s result, in the order ``rulekit forget`` prints."""

PURGE_KINDS: tuple[str, ...] = ("events", "jobs", "attempts", "timers", "inbox", "payloads")
"""The keys of :meth:`Journal.purge`'s result."""

# -- the walk ----------------------------------------------------------------------------------


@dataclass
class EventRow:
    """An audit record as :func:`forget_client` reads it (``key``: the store's row key)."""

    key: Any
    event_id: str
    inbox_id: int | None
    conversation_id: str | None
    data: dict[str, Any]
    trace: Any


@dataclass
class ConversationRow:
    channel: str
    key: str
    data: dict[str, Any]


@dataclass
class InboxRow:
    """A done or failed inbox item: whether it still has a body, and its error."""

    id: int
    has_body: bool
    error: str | None


@dataclass
class JobRow:
    id: int
    params: Any
    result: Any
    error: str | None
    status: str
    destination: str = ""
    """Where the job was sent (its pacing key), and its ``lane``: made of its parameters, so
    the client's data when a rule renders it from theirs (a chat id in a custom field)."""
    lane: str = ""
    in_call: bool = False
    """Its call is under way (started, its outcome not recorded yet)."""


@dataclass
class TimerRow:
    """A timer of the client's conversations, with the reason it ended (which may quote what
    its ``unless:`` read)."""

    id: int
    reason: str | None


@dataclass
class AttemptRow:
    key: Any
    result: Any
    error: str | None


class ForgetRows(Protocol):
    """How one store finds and rewrites the rows :func:`forget_client` erases. ``channel`` is
    ``None`` for every channel. Rows returned are the store's current ones (PostgreSQL locks
    them); JSON values are JSON data."""

    def clients(self, client_id: str, channel: str | None) -> list[dict[str, Any]]:
        """The client's records (``Client`` as JSON)."""

    def delete_clients(self, client_id: str, channel: str | None) -> int:
        """Delete the client's records; how many."""

    def events(self, client_id: str, channel: str | None) -> list[EventRow]:
        """Audit records whose event's ``client.id`` is the client."""

    def update_event(self, row: EventRow, data: dict[str, Any], trace: Any) -> None: ...

    def conversations(
        self, client_id: str, ids: Sequence[str], channel: str | None
    ) -> list[ConversationRow]:
        """Conversations keyed by the client id, or whose rulekit id is in ``ids``."""

    def update_conversation(self, row: ConversationRow, data: dict[str, Any]) -> None: ...

    def inbox(
        self,
        ids: Sequence[int],
        client_id: str,
        channel: str | None,
        conversations: Sequence[tuple[str, str]],
    ) -> list[InboxRow]:
        """Done or failed inbox items with an id in ``ids``, or (on ``channel``) of one of the
        client's ``conversations`` (``(channel, key)``: their ``conversation_key``) or whose
        body holds the client id."""

    def erase_inbox(self, row: InboxRow, error: str | None) -> None:
        """Empty the item's body and set its error."""

    def jobs(self, event_ids: Sequence[str]) -> list[JobRow]:
        """Jobs of these events."""

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
        """Rewrite the job; ``dead``: it becomes a dead letter (never sent as it now is)."""

    def release_job(self, row: JobRow) -> None:
        """Withdraw the job's claim, unless its call is under way: the daemon holding it reads
        it, and its event, from the store again before its call (they were read before the
        erasure)."""

    def attempts(self, job_ids: Sequence[int]) -> list[AttemptRow]:
        """Attempts of these jobs."""

    def update_attempt(self, row: AttemptRow, result: Any, error: str | None) -> None: ...

    def timers(self, conversation_ids: Sequence[str], event_ids: Sequence[str]) -> list[TimerRow]:
        """Timers of these conversations, or set by or fired as these events."""

    def update_timer(self, row: TimerRow, reason: str | None) -> None: ...

    def forget_requests(self, conversation_ids: Sequence[str]) -> None:
        """Forget the console's request keys about these conversations, with the answers kept
        for their retries (which quote the conversation)."""

    def forget_paces(self, personal: PersonalValues) -> None:
        """Forget the pacing shared between daemons of keys holding a personal value (a
        destination rendered from the client's data)."""


def forget_client(rows: ForgetRows, client_id: str, channel: str | None) -> dict[str, int]:
    """Erase a client's personal data through ``rows``; what was erased, by kind (see
    :meth:`rulekit.store.base.Journal.forget_client`)."""
    counts = dict.fromkeys(FORGET_KINDS, 0)
    clients = rows.clients(client_id, channel)
    events = rows.events(client_id, channel)
    conversation_ids = sorted({row.conversation_id for row in events if row.conversation_id})
    conversations = rows.conversations(client_id, conversation_ids, channel)
    personal = personal_values(
        clients, [row.data for row in events], [row.data for row in conversations]
    )

    counts["clients"] = rows.delete_clients(client_id, channel)
    for event in events:
        data, had_text = forget_event_data(event.data, personal)
        trace, _ = scrub(event.trace, personal, TRACE_KEPT)
        if isinstance(trace, dict):
            trace = {**trace, ERASED_MARK: True}
        rows.update_event(event, data, trace)
        counts["events"] += 1
        counts["messages"] += had_text

    for conversation in conversations:
        data, changed = forget_conversation_data(conversation.data, personal)
        if changed:
            rows.update_conversation(conversation, data)
            counts["conversations"] += 1
    known_ids = {str(c.data["id"]) for c in conversations if c.data.get("id")}
    rows.forget_requests(sorted(known_ids | set(conversation_ids)))

    event_ids = [row.event_id for row in events]
    for timer in rows.timers(sorted(known_ids | set(conversation_ids)), event_ids):
        reason, n_reason = scrub(timer.reason, personal)
        if n_reason:  # not counted: the event it fired as is
            rows.update_timer(timer, reason)

    inbox_ids = sorted({row.inbox_id for row in events if row.inbox_id is not None})
    # the conversations the client's events are in, and on the channels of their events the
    # one keyed by their id (Chatra and Telegram key a conversation by its client): a
    # conversation keyed by a value equal to the client id is not theirs on every channel (a
    # webhook sender's ticket number)
    theirs = set(conversation_ids)
    keys = {(c.channel, c.key) for c in conversations if c.data.get("id") in theirs}
    channels = {row.data.get("channel") for row in events} | {channel}
    keys |= {(name, client_id) for name in channels if isinstance(name, str)}
    for item in rows.inbox(inbox_ids, client_id, channel, sorted(keys)):
        error, n_error = scrub(item.error, personal)
        if item.has_body or n_error:
            rows.erase_inbox(item, error)
            counts["payloads"] += 1

    jobs = rows.jobs([row.event_id for row in events])
    for job in jobs:
        params, n_params = scrub(job.params, personal)
        result, n_result = scrub(job.result, personal)
        error, n_error = scrub(job.error, personal)
        (destination, lane), n_where = scrub([job.destination, job.lane], personal)
        # a job still to be sent would send FORGOTTEN in place of what it quoted; the outcome
        # of a call under way would be recorded after the erasure, quoting what it was sent
        in_call = job.status == "pending" and job.in_call
        stop = in_call or (bool(n_params) and job.status == "pending")
        if n_params or n_result or n_error or n_where or stop:
            if stop:
                error = CALL_UNDER_WAY if in_call else NOT_SENT
            rows.update_job(
                job, params, result, error, destination=destination, lane=lane, dead=stop
            )
            counts["jobs"] += 1
        if job.status == "pending" and not stop:
            rows.release_job(job)
    for attempt in rows.attempts([job.id for job in jobs]):
        result, n_result = scrub(attempt.result, personal)
        error, n_error = scrub(attempt.error, personal)
        if n_result or n_error:
            rows.update_attempt(attempt, result, error)
            counts["attempts"] += 1
    rows.forget_paces(personal)
    return counts
