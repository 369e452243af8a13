"""Second chances: dead letters retried, set-aside webhooks requeued.

A dead letter is an outbox job that failed for good (its error and attempts kept); retrying it
makes it pending and due at once, and the dispatcher sends it again. A set-aside webhook is an
inbox item a provider or the rules could not process (status ``failed`` with the reason);
requeueing it makes it pending, and the processor takes it from the start again (the events it
led to before are recognised by their ids and not processed twice).

The console's JSON API and ``rulekit retry`` / ``rulekit requeue`` both come here. ``channels``
limits what may be seen and touched (an agent's channels; ``None``: everything, the admin):
what is outside them is reported as not found, exactly like what does not exist.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from rulekit.audit.privacy import HIDDEN, hide
from rulekit.store.base import JournaledState
from rulekit.store.erasure import erased_params
from rulekit.store.forms import PersonalValues, hidden_values
from rulekit.store.records import InboxItem, Job

LIST_LIMIT = 100
PREVIEW = 200
"""How much of a set-aside body a listing shows."""
HEAD_BYTES = 4 * PREVIEW + 4
"""The bytes of a body read to show its preview: :data:`PREVIEW` characters of UTF-8 take at
most 4 bytes each (a byte that is not UTF-8 shows as one character), and one character more
tells whether the last one is cut short."""


class NotFound(LookupError):
    """No such dead letter or set-aside webhook (or none the asker may see)."""


class NotRepairable(ValueError):
    """It exists, but is not in a state to be retried (e.g. a job still pending)."""


def job_channel(state: JournaledState, job: Job) -> str | None:
    record = state.get_event(job.event_id)
    return record.channel if record else None


def _allowed(channel: str | None, channels: Collection[str] | None) -> bool:
    return channels is None or (channel is not None and channel in channels)


def dead_letters(
    state: JournaledState, channels: Collection[str] | None, *, limit: int = LIST_LIMIT
) -> list[dict[str, Any]]:
    """Dead jobs of ``channels``, newest first, with their event's channel and conversation."""
    found = []
    for job in state.dead_jobs(channels=channels, limit=limit):
        record = state.get_event(job.event_id)
        channel = record.channel if record else None
        found.append(
            {
                **job_view(job),
                "channel": channel,
                "event": record.event if record else None,
                "conversation_id": record.conversation_id if record else None,
            }
        )
    return found


def set_aside(
    state: JournaledState, channels: Collection[str] | None, *, limit: int = LIST_LIMIT
) -> list[dict[str, Any]]:
    """Set-aside inbox items of ``channels``, newest first (their bodies previewed)."""
    heads = state.inbox_heads(HEAD_BYTES, status="failed", limit=limit, channels=channels)
    return [item_view(item, size) for item, size in heads]


def retry(state: JournaledState, job_id: int, channels: Collection[str] | None) -> dict[str, Any]:
    """Make dead letter ``job_id`` pending again; its view, as it is now."""
    job = state.get_job(job_id)
    if job is None or not _allowed(job_channel(state, job), channels):
        raise NotFound(f"no dead letter {job_id}")
    if job.status != "dead":
        raise NotRepairable(f"job {job_id} is {job.status}, not a dead letter")
    if erased_params(job.params):
        raise NotRepairable(
            f"job {job_id} cannot be sent again: its parameters quoted a client's personal data,"
            " erased by rulekit forget"
        )
    # checked again by the change itself: another retry may have made it pending (and a
    # dispatcher sent it) since it was read, and must not be undone into a second send
    if not state.requeue_job(job_id, only_from="dead"):
        raise NotRepairable(f"job {job_id} is no longer a dead letter: retried meanwhile")
    return {**job_view(job), "status": "pending"}


def requeue(
    state: JournaledState, inbox_id: int, channels: Collection[str] | None
) -> dict[str, Any]:
    """Make set-aside item ``inbox_id`` pending again; its view, as it is now."""
    item = state.get_inbox(inbox_id)
    if item is None or not _allowed(item.channel, channels):
        raise NotFound(f"no set-aside webhook {inbox_id}")
    if item.status != "failed":
        raise NotRepairable(f"webhook {inbox_id} is {item.status}, not set aside")
    if not state.requeue_inbox(inbox_id, only_from="failed"):  # (requeued meanwhile)
        raise NotRepairable(f"webhook {inbox_id} is no longer set aside: requeued meanwhile")
    return {**item_view(item), "status": "pending"}


def without_content(state: JournaledState, entry: dict[str, Any]) -> dict[str, Any]:
    """A dead letter or set-aside webhook (as :func:`job_view` or :func:`item_view` show it)
    as the command line shows it without ``--show-content``, like ``rulekit why``: what its
    error or destination quotes of the client is hidden (the client of the job's event; for a
    webhook that could not be read, all but rulekit's own wording: :func:`set_aside_reason`),
    and so is a webhook's body."""
    if "job_id" in entry:
        record = state.get_event(entry["event_id"]) if entry.get("event_id") else None
        values = hidden_values(record.data) if record is not None else PersonalValues()
        # the destination is made of the params: a rule may have rendered it from the client's
        return {
            **entry,
            "error": hide(entry.get("error"), values),
            "destination": hide(entry.get("destination"), values),
        }
    preview = entry.get("body_preview")
    return {
        **entry,
        "error": set_aside_reason(entry.get("error"), entry.get("channel")),
        "body_preview": HIDDEN if preview else preview,
    }


# rulekit's own reasons for setting an item aside: fixed wording, but the event ids in some
# come from the body (hidden)
_EVENT_REASON = re.compile(
    r"evaluating event .+? (took more than its (?:CPU|time) budget \([\w .;+-]+\)"
    r"|needed more memory than the worker may use \(processing\.worker_memory\))",
    re.DOTALL,
)
_FIXED_REASON = re.compile(
    r"the evaluation worker died evaluating it \(exit code (?:-?\d+|None)\)"
    r"|the conversation's state changed \d+ times while evaluated"
    r"|the [\w.-]+ provider's (?:parse|timer_due|channel_timers) (?:did not return within"
    r" its budget|was not started: \d+ of its calls run over their budget)"
    r" \(PARSE_BUDGET: [\d.e+-]+ s\)"
)
_BUG = re.compile(r"([A-Z]\w*(?:Error|Exception)): ")
"""How a bug's error is stored: ``KeyError: <its message>``."""


def set_aside_reason(error: str | None, channel: str | None) -> str | None:
    """A set-aside webhook's ``error`` as shown without ``--show-content``, read without its
    body (a listing would otherwise read up to 100 whole bodies): rulekit's own reasons as
    they are (an event id in them :data:`HIDDEN`), a bug's exception type with its message
    hidden, and anything else a provider wrote (it may quote the body anywhere) hidden."""
    if not error:
        return error
    if _FIXED_REASON.fullmatch(error) or error == (
        f"channel {channel!r} is not configured any more"
    ):
        return error
    if (reason := _EVENT_REASON.fullmatch(error)) is not None:
        return f"evaluating event {HIDDEN} {reason.group(1)}"
    if (bug := _BUG.match(error)) is not None:
        return f"{bug.group(1)}: {HIDDEN}"
    return HIDDEN


def job_view(job: Job) -> dict[str, Any]:
    """A job as the console and the CLI show it."""
    return {
        "job_id": job.id,
        "event_id": job.event_id,
        "rule": job.rule,
        "action": job.action,
        "destination": job.destination,
        "status": job.status,
        "attempts": job.attempts,
        "error": job.last_error,
    }


def item_view(item: InboxItem, size: int | None = None) -> dict[str, Any]:
    """A set-aside inbox item as the console and the CLI show it; ``size``: its whole body's,
    when ``item`` holds only the body's first :data:`HEAD_BYTES` bytes."""
    body = item.body[:HEAD_BYTES].decode("utf-8", errors="replace")
    return {
        "inbox_id": item.id,
        "channel": item.channel,
        "received_at": item.received_at.isoformat(),
        "status": item.status,
        "attempts": item.attempts,
        "error": item.error,
        "body_preview": body[:PREVIEW],
        "body_bytes": len(item.body) if size is None else size,
    }
