"""The daemon's journal records: what the :class:`~rulekit.store.base.Journal` hands back.

Plain frozen dataclasses, the same whichever store produced them. Times are timezone-aware
(UTC); JSON columns come back as plain Python data (dicts, lists, str, numbers, bools, None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from rulekit.event import Conversation, Event

InboxStatus = Literal["pending", "done", "failed"]
JobStatus = Literal["pending", "done", "dead"]
Outcome = Literal["done", "retry", "dead"]


def check_attempt(outcome: str, retry_at: datetime | None) -> None:
    """Reject an attempt record every store would refuse: an unknown outcome, a retry without
    a time."""
    if outcome not in ("done", "retry", "dead"):
        raise ValueError(f"unknown outcome {outcome!r}")
    if outcome == "retry" and retry_at is None:
        raise ValueError("a retry needs retry_at")


def utc(value: datetime | None = None) -> datetime:
    """``value`` in UTC (naive times are taken as UTC); the current time when ``None``."""
    if value is None:
        return datetime.now(UTC)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True)
class InboxItem:
    """A webhook body as it was received, before any provider read it."""

    id: int
    channel: str
    received_at: datetime
    body: bytes
    delivery_key: str | None
    status: InboxStatus
    attempts: int
    """How many times a processor claimed it (a crash mid-processing shows as a retry)."""
    error: str | None = None
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    conversation_key: str | None = None
    """The conversation the body belongs to, when ingest could tell (see ``append_inbox``)."""


@dataclass(frozen=True)
class JobSpec:
    """An action job to enqueue: one rendered action of a plan."""

    rule: str
    action: str
    params: dict[str, Any]
    destination: str
    """Where the call goes, e.g. ``telegram:-100123`` or ``autoreply`` (shown in the audit)."""
    lane: str | None = None
    """What orders the job: the jobs of one lane are executed one at a time, oldest first, by
    one daemon at a time (see :meth:`Journal.claim_jobs`). A paced destination (a Slack
    channel) or a conversation (its replies); ``None``: the destination."""


APPLIED = "applied_change"
"""The key of a pending job's ``result`` under which a call that changed stored state notes
what it did (:meth:`~rulekit.store.outbox.Outbox.note_applied_change`)."""
INTERRUPTED = "interrupted: the daemon making the call stopped before recording its outcome"
"""The error of the attempt counted for a call started by a daemon that died before recording
its outcome (the call may have reached the service)."""


@dataclass(frozen=True)
class Job:
    """An action job in the outbox, with where it stands."""

    id: int
    event_id: str
    rule: str
    action: str
    params: dict[str, Any]
    destination: str
    status: JobStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None
    result: Any = None
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    lane: str = ""
    """The job's lane (:attr:`JobSpec.lane`)."""
    call_started_at: datetime | None = None
    """When a call of the job was started and its outcome not yet recorded (see
    :meth:`Journal.start_call`); None when no call is under way."""
    call_started_by: str | None = None


@dataclass(frozen=True)
class EventRecord:
    """A processed event as the audit trail keeps it."""

    event_id: str
    inbox_id: int | None
    channel: str
    event: str
    conversation_id: str | None
    occurred_at: datetime
    processed_at: datetime
    data: dict[str, Any] = field(repr=False)
    """The normalized event (``Event.public()``: the raw payload stays in the inbox)."""
    trace: dict[str, Any] = field(repr=False)
    """The engine's explanation: candidates, each condition's result, the plan."""
    size: int = 0
    """The length of its ``data`` as stored (JSON text), when read for executing its jobs
    (:meth:`~rulekit.store.history.History.events_for_jobs`); 0 otherwise."""


@dataclass(frozen=True)
class Attempt:
    """One try of one job."""

    job_id: int
    at: datetime
    outcome: Outcome
    error: str | None = None
    result: Any = None


TimerStatus = Literal["pending", "fired", "unless", "dropped", "cancelled", "gone", "error"]
"""``pending`` until due; then ``fired`` (its actions are in the outbox), ``unless`` (the rule's
``unless:`` held), ``dropped`` (over ``max_late``), ``gone`` (the rule or the triggering event
no longer exists) or ``error``; or ``cancelled`` by a ``cancel_on`` event."""


@dataclass(frozen=True)
class Timer:
    """A timer of a timed rule (``after:``) for one conversation."""

    id: int
    rule: str
    conversation_id: str
    channel: str
    due: datetime
    trigger_event_id: str
    """The event that set (or last restarted) it; read back from the audit trail when due."""
    status: TimerStatus
    set_at: datetime
    finished_at: datetime | None = None
    reason: str | None = None
    by_event: str | None = None
    """The event that cancelled it, or the event its firing is recorded as (``timer:<id>``)."""
    claimed_by: str | None = None
    claimed_until: datetime | None = None


@dataclass(frozen=True)
class RuleStats:
    """What one rule did over a period (``rulekit stats``): events it matched, its actions'
    jobs by status (of events processed in the period), failed attempts, when it last fired."""

    rule: str
    matched: int = 0
    done: int = 0
    failed: int = 0
    """Attempts that did not succeed (retried or dead-lettered)."""
    dead: int = 0
    pending: int = 0
    last_fired: datetime | None = None


@dataclass(frozen=True)
class NewEvent:
    """An event to record (:meth:`~rulekit.store.base.Journal.record_events`): its trace and
    its plan's jobs."""

    event: Event
    inbox_id: int | None
    trace: Mapping[str, Any]
    jobs: Sequence[JobSpec] = ()


@dataclass(frozen=True)
class CallStart:
    """What :meth:`~rulekit.store.base.JournaledState.begin_call` found."""

    started: bool
    """The call may go (its start is recorded)."""
    wait: float = 0.0
    """Seconds a pause of the service has left: nothing was recorded, ask again then."""
    conversation: Conversation | None = None
    """The conversation asked for, as stored, when the call started."""
