"""A client's personal values, and any stored value with them scrubbed out.

:func:`personal_values` gathers what identifies a client (their fields, the page of their
conversation, their messages' texts); :func:`scrub` rewrites any JSON-like value so that no
string, object key or number holds one of them in any stored form (:mod:`rulekit.store.forms`),
and :func:`forget_event_data` / :func:`forget_conversation_data` apply it to an audit record's
event and to a conversation. :mod:`rulekit.store.erasure` walks a store's rows with them.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterable, Mapping
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from rulekit.event import FORGOTTEN, Conversation, Event
from rulekit.store.forms import PersonalValues, strings_in

CLIENT_PERSONAL_FIELDS: tuple[str, ...] = ("name", "display_name", "email", "phone", "notes", "ip")
"""Client fields whose values are looked for elsewhere (with custom fields, the page and message
texts). Every client field but ``id`` is blanked in the client's audit records."""

CONVERSATION_PERSONAL_FIELDS: tuple[str, ...] = ("page",)
"""Conversation fields that say something about the client (the page they were on)."""

Path = tuple[str, ...]


def typed_paths(model: type[BaseModel], prefix: Path = ()) -> frozenset[Path]:
    """The paths of ``model``'s fields (and its models' fields) that hold no free text: times,
    choices (``Literal``), numbers and booleans. A personal value may be part of such a value
    ("2026" of a time, a client's "high" of a priority) but is never one; erased, the record
    would no longer load (its conversation, its event: the client's next message, a timer)."""
    paths: set[Path] = set()
    for name, field in model.model_fields.items():
        kind = _without_none(field.annotation)
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            paths |= typed_paths(kind, (*prefix, name))
        elif kind is not str and get_origin(kind) not in (list, dict) and kind is not Any:
            paths.add((*prefix, name))
    return frozenset(paths)


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
        return kinds[0] if len(kinds) == 1 else annotation
    return annotation


EVENT_KEPT: frozenset[Path] = typed_paths(Event) | frozenset(
    {
        ("id",),
        ("channel",),
        ("event",),
        ("occurred_at",),
        ("origin",),
        ("client", "id"),
        ("conversation", "id"),
        ("conversation", "external_id"),
        ("conversation", "status"),
        ("conversation", "group"),
        ("conversation", "assignee"),
        ("conversation", "last_agent"),
        ("conversation", "link"),
        ("message", "id"),
        ("message", "author"),
        ("message", "agent"),
        ("message", "created_at"),
        ("agent", "id"),
        ("agent", "email"),
        ("agent", "name"),
    }
)
"""Strings of an event that are ids, names of things or agent data, never the client's."""

TRACE_KEPT: frozenset[Path] = frozenset(
    {
        ("rules_version",),
        ("rules", "*", "name"),
        ("rules", "*", "outcomes"),
        ("plan", "*", "rule"),
        ("plan", "*", "action"),
        ("actions", "*", "rule"),
        ("actions", "*", "action"),
    }
)
"""Strings of a trace that name rules and actions (condition sources, reasons, errors and
rendered params are scrubbed: they may quote the client)."""

CONVERSATION_KEPT: frozenset[Path] = typed_paths(Conversation) | frozenset(
    {(name,) for name in ("id", "external_id", "status", "group", "assignee", "last_agent", "link")}
)


# -- what is personal --------------------------------------------------------------------------


def personal_values(
    clients: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    conversations: Iterable[Mapping[str, Any]] = (),
) -> PersonalValues:
    """The values that identify a client or say what they wrote, from its stored records
    (``Client`` as JSON), the events about it (``Event.public()``) and its conversations."""
    found: list[str] = []

    def add_client(client: Any) -> None:
        if isinstance(client, Mapping):
            for name in CLIENT_PERSONAL_FIELDS:
                found.extend(strings_in(client.get(name)))
            found.extend(strings_in(client.get("custom")))

    def add_conversation(conversation: Any) -> None:
        if isinstance(conversation, Mapping):
            for name in CONVERSATION_PERSONAL_FIELDS:
                found.extend(strings_in(conversation.get(name)))

    for client in clients:
        add_client(client)
    for event in events:
        add_client(event.get("client"))
        add_conversation(event.get("conversation"))
        message = event.get("message")
        if isinstance(message, Mapping):
            found.extend(strings_in(message.get("text")))
    for conversation in conversations:
        add_conversation(conversation)
    return PersonalValues(found)


# -- rewriting records -------------------------------------------------------------------------


def scrub(
    value: Any,
    personal: PersonalValues,
    kept: frozenset[Path] = frozenset(),
    replacement: str = FORGOTTEN,
) -> tuple[Any, int]:
    """``value`` (JSON data) with every string holding a personal value (in any stored form)
    replaced by ``replacement``, except at the ``kept`` paths (keys; ``*`` for any list item),
    and every object key holding one likewise (numbered when several would be the same); and
    how many strings were replaced."""
    if not personal:
        return value, 0
    return _scrub(value, personal, kept, (), replacement)


def _scrub(
    value: Any, personal: PersonalValues, kept: frozenset[Path], path: Path, replacement: str
) -> tuple[Any, int]:
    if isinstance(value, str):
        if path not in kept and personal.found_in(value):
            return replacement, 1
        return value, 0
    if isinstance(value, int | float) and not isinstance(value, bool):
        # a service's answer writes an id it was sent as a number (Telegram's chat_id)
        if path not in kept and personal.is_value(json.dumps(value)):
            return replacement, 1
        return value, 0
    if isinstance(value, list):
        out, total = [], 0
        for item in value:
            new, count = _scrub(item, personal, kept, (*path, "*"), replacement)
            out.append(new)
            total += count
        return out, total
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        total = 0
        for key, item in value.items():
            new, count = _scrub(item, personal, kept, (*path, str(key)), replacement)
            total += count
            if isinstance(key, str) and personal.found_in(key):
                # a key may be the client's too (an email a rule passed to team.open_count());
                # each entry is kept, under a key of its own
                key = _free_key(result, replacement)
                total += 1
            result[key] = new
        return result, total
    return value, 0


def _free_key(taken: Mapping[Any, Any], replacement: str) -> str:
    """``replacement``, or ``replacement`` numbered when a key of ``taken`` holds it already."""
    key, number = replacement, 1
    while key in taken:
        number += 1
        key = f"{replacement} {number}"
    return key


def erased_params(params: Any) -> bool:
    """Whether a job's parameters were rewritten by erasure (sending them would send
    :data:`FORGOTTEN` in place of what they said)."""
    if isinstance(params, str):
        return params == FORGOTTEN
    if isinstance(params, list):
        return any(erased_params(item) for item in params)
    if isinstance(params, dict):
        return any(erased_params(item) for item in params.values())
    return False


def forget_event_data(
    data: Mapping[str, Any], personal: PersonalValues
) -> tuple[dict[str, Any], bool]:
    """An audit record's event without the client's data; and whether it had a message text."""
    out = dict(data)
    client = out.get("client")
    if isinstance(client, Mapping):
        out["client"] = {key: _blank(key, value) for key, value in client.items()}
    conversation = out.get("conversation")
    if isinstance(conversation, Mapping):
        out["conversation"] = _without_personal_fields(conversation)
    message = out.get("message")
    had_text = isinstance(message, Mapping) and message.get("text") is not None
    if isinstance(message, Mapping):
        out["message"] = {**message, "text": None}
    scrubbed, _ = scrub(out, personal, EVENT_KEPT)
    return scrubbed, had_text


def _blank(key: str, value: Any) -> Any:
    if key == "id":
        return value
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return None


def _without_personal_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: None if key in CONVERSATION_PERSONAL_FIELDS else value for key, value in data.items()
    }


def forget_conversation_data(
    data: Mapping[str, Any], personal: PersonalValues
) -> tuple[dict[str, Any], bool]:
    """A conversation (as JSON) without its personal fields nor strings quoting a personal
    value; and whether anything changed."""
    out, _ = scrub(_without_personal_fields(data), personal, CONVERSATION_KEPT)
    return out, out != dict(data)
