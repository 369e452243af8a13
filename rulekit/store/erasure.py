"""Erasing a client's personal data from stored records, the same way in every store.

:meth:`Journal.forget_client <rulekit.store.base.Journal.forget_client>` finds the records
(each store with its own queries) and rewrites them with these pure functions, so what
"forgotten" means does not depend on the backend:

* an audit record's ``client`` keeps only its ``id``, its ``message.text`` is dropped;
* any other string (in the event, its trace, a job's params, result or error, an attempt's
  result or error) that contains one of the client's **personal values** — name, display
  name, email, phone, notes, IP, custom fields, the texts of the client's messages — is
  replaced by :data:`FORGOTTEN`, since a rendered Slack message may quote them;
* a conversation loses its :data:`CONVERSATION_PERSONAL_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FORGOTTEN = "[forgotten]"
"""What a string carrying personal data becomes."""

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

PURGE_KINDS: tuple[str, ...] = ("events", "jobs", "attempts", "inbox", "payloads")
"""The keys of :meth:`Journal.purge`'s result."""

CLIENT_PERSONAL_FIELDS: tuple[str, ...] = ("name", "display_name", "email", "phone", "notes", "ip")
"""Client fields whose values are looked for elsewhere (with custom fields and message texts)."""

CONVERSATION_PERSONAL_FIELDS: tuple[str, ...] = ("page",)
"""Conversation fields that say something about the client (the page they were on)."""

MIN_VALUE_LENGTH = 3
"""Shorter values are not looked for in other strings: "Al" would erase half the trace."""

_STRUCTURAL_KEYS = frozenset({"source", "rule", "action", "name", "destination", "reason"})
"""Keys holding rule text or names, never client data (a condition's source may quote a
message's words without being personal)."""


def personal_values(
    clients: Iterable[Mapping[str, Any]], events: Iterable[Mapping[str, Any]]
) -> set[str]:
    """The strings that identify a client: from its stored records (``Client`` as JSON) and
    from the events about it (``Event.public()``: their ``client`` and ``message``)."""
    found: set[str] = set()

    def add_client(client: Mapping[str, Any] | None) -> None:
        if not isinstance(client, Mapping):
            return
        for name in CLIENT_PERSONAL_FIELDS:
            _add(found, client.get(name))
        custom = client.get("custom")
        if isinstance(custom, Mapping):
            for value in custom.values():
                _add(found, value)

    for client in clients:
        add_client(client)
    for event in events:
        add_client(event.get("client"))
        message = event.get("message")
        if isinstance(message, Mapping) and message.get("author") in (None, "client"):
            _add(found, message.get("text"))
    return found


def _add(found: set[str], value: Any) -> None:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value).strip()
        if len(text) >= MIN_VALUE_LENGTH:
            found.add(text.casefold())


def scrub(value: Any, personal: set[str], replacement: str = FORGOTTEN) -> tuple[Any, int]:
    """``value`` (JSON data) with every string containing a personal value replaced by
    ``replacement``; and how many strings were replaced."""
    if not personal:
        return value, 0
    if isinstance(value, str):
        folded = value.casefold()
        if any(item in folded for item in personal):
            return replacement, 1
        return value, 0
    if isinstance(value, list):
        out, total = [], 0
        for item in value:
            new, count = scrub(item, personal, replacement)
            out.append(new)
            total += count
        return out, total
    if isinstance(value, dict):
        result: dict[Any, Any] = {}
        total = 0
        for key, item in value.items():
            if key in _STRUCTURAL_KEYS and isinstance(item, str):
                result[key] = item
                continue
            result[key], count = scrub(item, personal, replacement)
            total += count
        return result, total
    return value, 0


def forget_event_data(data: Mapping[str, Any], personal: set[str]) -> tuple[dict[str, Any], bool]:
    """An audit record's event without the client's data; and whether it had a message text."""
    out = dict(data)
    client = out.get("client")
    if isinstance(client, Mapping):
        out["client"] = {key: _blank(key, value) for key, value in client.items()}
    message = out.get("message")
    had_text = isinstance(message, Mapping) and message.get("text") is not None
    if isinstance(message, Mapping):
        out["message"] = {**message, "text": None}
    scrubbed, _ = scrub(out, personal)
    return scrubbed, had_text


def _blank(key: str, value: Any) -> Any:
    if key == "id":
        return value
    if isinstance(value, dict):
        return {}
    if isinstance(value, list):
        return []
    return None


def forget_conversation_data(data: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """A conversation (as JSON) without its personal fields; and whether any was set."""
    out = dict(data)
    changed = False
    for name in CONVERSATION_PERSONAL_FIELDS:
        if out.get(name) is not None:
            out[name] = None
            changed = True
    return out, changed
