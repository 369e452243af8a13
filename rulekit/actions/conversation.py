"""Changing a conversation's state: what changed, and the ``updated`` event that says so.

The state-changing actions (``assign``, ``tag``, ``set``) share this: a change is applied to the
stored conversation in one store transaction (:meth:`Action.change_state
<rulekit.actions.base.Action.change_state>`: the transaction that records the event that
planned a ``tag`` or ``set``, see :mod:`rulekit.runtime.changes`; the action's own when it runs
as a job, in a worker thread, never on the event loop; the console's when an agent makes the
change), and when it changed anything, one ``updated`` event (origin ``rulekit``) carries
``changed``:

* ``changed.tags`` — ``{from, to, added, removed}`` (lists); ``{added: [], removed: []}`` when
  the tags did not change, so ``'vip' in changed.tags.added`` is simply false;
* ``changed.fields`` — ``{name: {from, to}}`` for each field that changed;
* ``changed.priority``, ``changed.assignee``, ``changed.group`` — ``{from, to}``; ``{}`` when
  unchanged (so ``changed.priority.to`` reads none).

A call that changes nothing (the same value again) emits no ``updated``: a rule that sets what
it matches on therefore cannot loop. Each call's ``updated`` has an id of its own
(:func:`updated_event`), the same for the call made again after a crash.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from rulekit.actions.base import Action, ActionContext, StateChange, call_key
from rulekit.errors import PermanentActionError
from rulekit.event import Conversation, Event, emitted_id
from rulekit.store.base import Journal, State
from rulekit.store.cached import CachedState
from rulekit.store.state import first_key

SCALARS: tuple[str, ...] = ("priority", "assignee", "group")
"""Attributes whose change is ``{from, to}``."""


def changes(before: Conversation, after: Conversation) -> dict[str, Any]:
    """What changed from ``before`` to ``after`` (``changed`` of an ``updated`` event); empty
    when nothing did."""
    changed: dict[str, Any] = {}
    for name in SCALARS:
        old, new = getattr(before, name), getattr(after, name)
        if name == "assignee" and (old or "").lower() == (new or "").lower():
            continue
        if old != new:
            changed[name] = {"from": old, "to": new}
    if before.tags != after.tags:
        changed["tags"] = {
            "from": list(before.tags),
            "to": list(after.tags),
            "added": [tag for tag in after.tags if tag not in before.tags],
            "removed": [tag for tag in before.tags if tag not in after.tags],
        }
    fields = {
        name: {"from": before.fields.get(name), "to": after.fields.get(name)}
        for name in sorted(set(before.fields) | set(after.fields))
        if _typed(before.fields.get(name)) != _typed(after.fields.get(name))
    }
    if fields:
        changed["fields"] = fields
    if not changed:
        return {}
    return {
        **{name: {} for name in SCALARS},
        "tags": {"added": [], "removed": []},
        "fields": {},
        **changed,
    }


def past_limit(count: int, before: int, limit: int, what: str, hint: str) -> str | None:
    """Why a call that leaves a conversation ``count`` of ``what`` (tags, fields; it had
    ``before``) cannot be made: more than ``limit``, and more than it had (None when it can:
    a conversation over the limit from before may lose some)."""
    if count > limit and count > before:
        return f"a conversation has at most {limit} {what}: this would make {count} ({hint})"
    return None


def _typed(value: Any) -> tuple[type, Any]:
    """A field's value compared with its type: ``true`` is not ``1``, nor ``1.0`` (Python
    holds them equal, which made setting one over the other no change, never written)."""
    return type(value), value


def updated_event(
    cause: Event, conversation: Conversation, changed: dict[str, Any], call: str = ""
) -> Event:
    """The ``updated`` event of a change ``cause``'s plan made (origin ``rulekit``), by its
    call ``call`` (:func:`~rulekit.actions.base.call_key`). Its id is stable for a redelivery
    of the same change by the same call, and another for each call (the same change made
    twice under one event is two events), without values (emails) in ids and logs."""
    digest = emitted_digest(repr(sorted(_flat(changed))), call)
    return Event(
        id=emitted_id(cause.id, "updated", digest),
        channel=cause.channel,
        event="updated",
        occurred_at=datetime.now(UTC),
        origin="rulekit",
        conversation=conversation.model_copy(deep=True),
        client=cause.client.model_copy(deep=True),
        changed=changed,
    )


def emitted_digest(what: str, call: str = "") -> str:
    """The 12 hex digits of an emitted event's id (:func:`~rulekit.event.emitted_id`): of what
    it says (``what``) and of the call that emitted it (none: the change alone, as an agent's
    change in the console)."""
    material = f"{what}\0{call}" if call else what
    return hashlib.sha256(material.encode()).hexdigest()[:12]


def _flat(value: Any, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [item for key, v in value.items() for item in _flat(v, f"{prefix}.{key}")]
    return [f"{prefix}={value!r}"]


def load(state: State, event: Event) -> tuple[str, Conversation]:
    """The stored conversation of ``event`` and its provider key. One stored nowhere (an event
    given already normalized; a provider that keeps no conversation state, as the generic
    webhook) is the event's, to be stored under the key its provider would read it by
    (:func:`~rulekit.store.state.first_key`)."""
    conversation_id = event.conversation.id or ""
    found = state.find_conversation(event.channel, conversation_id)
    if found is not None:
        return found
    return first_key(event.channel, conversation_id), event.conversation.model_copy(deep=True)


def apply(
    state: State, event: Event, change: Callable[[Conversation], Conversation]
) -> tuple[Conversation, dict[str, Any]]:
    """Apply ``change`` to the stored conversation of ``event`` in the open transaction
    ``state``; returns the conversation after it and what changed (empty: nothing, and
    nothing was written)."""
    if not event.conversation.id:
        raise PermanentActionError("the event has no conversation id")
    key, before = load(state, event)
    after = change(before.model_copy(deep=True))
    changed = changes(before, after)
    if changed:
        state.save_conversation(event.channel, key, after)
    return after, changed


def _noted(applied: dict[str, Any] | None) -> tuple[dict[str, Any], list[Event]] | None:
    """The result and events a note of an earlier call holds; None without one, or when it
    no longer reads as one (its values erased by ``rulekit forget``): the call is made again,
    which then finds nothing left to change. Raises :class:`PermanentActionError` for a note
    of a change that could not be made (:func:`~rulekit.actions.base.failure_note`)."""
    if applied is None:
        return None
    failed = applied.get("failed")
    if isinstance(failed, str):
        raise PermanentActionError(failed)
    try:
        result, emitted = applied["result"], applied["emitted"]
        events = [Event.model_validate(data) for data in emitted]
    except (KeyError, TypeError, ValueError):
        return None
    return (result, events) if isinstance(result, dict) else None


def outcome(
    event: Event,
    after: Conversation,
    changed: dict[str, Any],
    result: dict[str, Any],
    call: str = "",
) -> StateChange:
    """The :class:`StateChange` of a call (``call``) that left ``after``: with its
    ``updated`` event when anything changed (its id in ``result``)."""
    emitted = []
    if changed:
        updated = updated_event(event, after, changed, call)
        emitted.append(updated)
        result["event_id"] = updated.id
    return StateChange(after, changed, emitted, result)


async def execute(
    action: Action,
    params: BaseModel,
    context: ActionContext,
    change_state: Callable[..., StateChange] | None = None,
) -> dict[str, Any]:
    """:meth:`Action.execute` of a state-changing action: its
    :meth:`~Action.change_state` (or ``change_state``, what a rule's call makes where it
    differs from an agent's) in one transaction of its own (in a worker thread, never on
    the event loop); its events join ``context.emitted``."""
    make = action.change_state if change_state is None else change_state
    store = context.store
    if store is None:
        raise PermanentActionError(f"{action.name} needs the conversation store")
    if not context.event.conversation.id:
        raise PermanentActionError("the event has no conversation id")

    job_id = context.job_id

    def work() -> tuple[dict[str, Any], list[Event]]:
        with store.transaction() as state:
            journal = state if job_id is not None and isinstance(state, Journal) else None
            if journal is not None and job_id is not None:
                # made before, and the daemon stopped before recording the outcome: what that
                # call did, its events included (there is nothing left to change)
                noted = _noted(journal.applied_change(job_id))
                if noted is not None:
                    return noted
            call = ""
            if journal is not None and job_id is not None:
                place = journal.job_place(job_id)
                call = call_key(*place) if place is not None else f"job {job_id}"
            # the conversation is held from its read to the commit: a change committed
            # meanwhile (an agent's, another job's) is waited for, never written over
            held = CachedState(state, hold=True)
            change = make(params, context.event, held, context.config, call=call)
            held.flush()
            if journal is not None and job_id is not None:
                journal.note_applied_change(job_id, change.note())
            return change.result, change.emitted

    result, emitted = await asyncio.to_thread(work)
    context.emitted.extend(emitted)
    return result
