"""What audit output hides unless ``--show-content`` is given, and ``rulekit forget``.

Output of ``rulekit why``, ``rulekit history`` and ``rulekit replay`` names clients by their
display name (or name) and shows no other client data: no message texts, no email, phone, notes,
IP address, custom fields or other client field, no page URL. A terminal, a pasted bug report or
a CI log is not a place for them. ``--show-content`` shows them. Where a string quotes a hidden
value in any stored form (escaped for a markup, JSON-escaped, URL-encoded, other case: see
:mod:`rulekit.store.forms`) — rendered action parameters, results, errors, trace reasons and
condition errors, and the reasons of timers (why a timer was dropped or its ``unless:`` failed)
— that part is hidden (``Refund from Jane: [hidden]``), and so is a client's email that a rule
passed to ``team.open_count()`` where the output shows what the rules read of ``team``. The
agents' emails and presence there are shown: the audit commands are for admins.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any

from rulekit.errors import StoreConflict
from rulekit.store.base import JournaledStore
from rulekit.store.erasure import FORGET_KINDS
from rulekit.store.forms import SHOWN_CLIENT_FIELDS, PersonalValues, hidden_values

__all__ = [
    "FORGET_LABELS",
    "HIDDEN",
    "SHOWN_CLIENT_FIELDS",
    "client_label",
    "forget",
    "hidden_values",
    "hide",
    "hide_event",
    "hide_team",
]

HIDDEN = "[hidden]"
"""What a hidden value prints as."""


def hide_event(data: Mapping[str, Any], *related: Mapping[str, Any]) -> dict[str, Any]:
    """An event (``Event.public()``) with its content hidden: the hidden fields replaced by
    :data:`HIDDEN`, and where the conversation (its tags and fields) or what changed (an
    ``updated`` event's ``changed``) quotes a hidden value, that part (a rule may have set a
    field to the client's email, or tagged the chat with their plan); also a hidden value of
    the ``related`` events (a timer's firing holds the client as they are when it fires, and
    the conversation may quote what they were when the timer was set)."""
    out = dict(data)
    values = hidden_values(data, *related)
    for part in ("conversation", "changed"):
        if isinstance(out.get(part), Mapping):
            out[part] = hide(dict(out[part]), values)
    client = dict(out.get("client") or {})
    for name, value in client.items():
        if name in SHOWN_CLIENT_FIELDS or value in (None, "", [], {}):
            continue
        client[name] = {key: HIDDEN for key in value} if isinstance(value, dict) else HIDDEN
    out["client"] = client
    message = dict(out.get("message") or {})
    if message.get("text") is not None:
        message["text"] = HIDDEN
    out["message"] = message
    conversation = dict(out.get("conversation") or {})
    if conversation.get("page") is not None:
        conversation["page"] = HIDDEN
    out["conversation"] = conversation
    return out


def hide(value: Any, values: PersonalValues | Iterable[str]) -> Any:
    """``value`` (JSON data) with every occurrence of a hidden value, in any stored form, in its
    strings replaced by :data:`HIDDEN` (``"Refund from Jane: [hidden]"``), so what changed
    around it stays readable."""
    hidden = values if isinstance(values, PersonalValues) else PersonalValues(values)
    if not hidden:
        return value
    return _mask(value, hidden)


def _mask(value: Any, hidden: PersonalValues) -> Any:
    if isinstance(value, str):
        return hidden.replace_in(value, HIDDEN)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # a service's answer writes an id it was sent as a number (Telegram's chat_id)
        return HIDDEN if hidden.is_value(json.dumps(value)) else value
    if isinstance(value, list):
        return [_mask(item, hidden) for item in value]
    if isinstance(value, dict):
        return {key: _mask(item, hidden) for key, item in value.items()}
    return value


def hide_team(seen: Mapping[str, Any], values: PersonalValues | Iterable[str]) -> dict[str, Any]:
    """A trace's ``team`` (what the rules read of it) with the hidden values hidden, also where
    they are keys: an email of the client that a rule passed to ``team.open_count()`` is the
    client's data, the agents' emails are not."""
    out: dict[str, Any] = hide(dict(seen), values)
    counted = seen.get("open")
    if isinstance(counted, Mapping):
        out["open"] = {str(hide(str(key), values)): count for key, count in counted.items()}
    return out


def client_label(data: Mapping[str, Any], *, show_content: bool) -> str:
    """How output names an event's client: display name (or name, or id), plus the email with
    ``show_content``."""
    client = data.get("client") or {}
    label = client.get("display_name") or client.get("name") or client.get("id") or "-"
    if show_content and client.get("email"):
        label += f" <{client['email']}>"
    return str(label)


FORGET_TRIES = 5
"""Times :func:`forget` runs its transaction when the database ends it for another's sake."""


def forget(store: JournaledStore, client_id: str, channel: str | None = None) -> dict[str, int]:
    """Erase a client's personal data in one transaction; what was erased, by kind
    (:data:`rulekit.store.erasure.FORGET_KINDS`, in that order).

    The erasure holds the client's records, then their events and conversations; a daemon
    recording the client's next event holds the conversation, then the client. When the two
    meet, the database ends one of them (a deadlock: :class:`~rulekit.errors.StoreConflict`,
    nothing of it kept); the erasure then runs again, after a short pause, up to
    :data:`FORGET_TRIES` times (it used to fail, having erased nothing)."""
    for tried in range(1, FORGET_TRIES + 1):
        try:
            with store.transaction() as state:
                counts = state.forget_client(client_id, channel=channel)
            break
        except StoreConflict:
            if tried == FORGET_TRIES:
                raise
            time.sleep(random.uniform(0, 0.05 * 2**tried))  # (apart from the other's retry)
    return {kind: counts.get(kind, 0) for kind in FORGET_KINDS}


FORGET_LABELS = {
    "clients": "client records deleted",
    "conversations": "conversations cleared of personal fields",
    "events": "audit records cleared of client data",
    "messages": "message texts erased",
    "payloads": "raw payloads (inbox bodies) erased",
    "jobs": "action jobs scrubbed",
    "attempts": "action attempts scrubbed",
}
"""How ``rulekit forget`` names each kind."""
