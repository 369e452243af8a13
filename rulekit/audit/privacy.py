"""What audit output hides unless ``--show-content`` is given, and ``rulekit forget``.

Output of ``rulekit why`` and ``rulekit history`` names clients by their display name and shows
no message texts, emails, phone numbers, IP addresses or notes: a terminal, a pasted bug report or
a CI log is not a place for them. ``--show-content`` shows them. Where rendered action parameters,
results or errors quote a hidden value, that part is hidden (a Slack text may quote the message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from rulekit.store.base import JournaledStore
from rulekit.store.erasure import FORGET_KINDS, MIN_VALUE_LENGTH

HIDDEN = "[hidden]"
"""What a hidden value prints as."""

HIDDEN_CLIENT_FIELDS = ("email", "phone", "ip", "notes")


def hidden_values(data: Mapping[str, Any]) -> set[str]:
    """The values of an event (``Event.public()``) that output hides: the message text and the
    client's email, phone, IP, notes and custom fields (case-folded, as ``scrub`` wants)."""
    values: set[str] = set()
    client = data.get("client") or {}
    candidates: list[Any] = [client.get(name) for name in HIDDEN_CLIENT_FIELDS]
    candidates.extend((client.get("custom") or {}).values())
    candidates.append((data.get("message") or {}).get("text"))
    for value in candidates:
        if isinstance(value, str) and len(value.strip()) >= MIN_VALUE_LENGTH:
            values.add(value.strip().casefold())
    return values


def hide_event(data: Mapping[str, Any]) -> dict[str, Any]:
    """An event (``Event.public()``) with its content hidden."""
    out = dict(data)
    client = dict(out.get("client") or {})
    for name in HIDDEN_CLIENT_FIELDS:
        if client.get(name) is not None:
            client[name] = HIDDEN
    if client.get("custom"):
        client["custom"] = {key: HIDDEN for key in client["custom"]}
    out["client"] = client
    message = dict(out.get("message") or {})
    if message.get("text") is not None:
        message["text"] = HIDDEN
    out["message"] = message
    return out


def hide(value: Any, values: set[str]) -> Any:
    """``value`` (JSON data) with every occurrence of a hidden value in its strings replaced by
    :data:`HIDDEN` (``"Refund from Jane: [hidden]"``), so what changed around it stays readable."""
    if not values:
        return value
    pattern = re.compile(
        "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)), re.IGNORECASE
    )
    return _mask(value, pattern)


def _mask(value: Any, pattern: re.Pattern[str]) -> Any:
    if isinstance(value, str):
        return pattern.sub(HIDDEN, value)
    if isinstance(value, list):
        return [_mask(item, pattern) for item in value]
    if isinstance(value, dict):
        return {key: _mask(item, pattern) for key, item in value.items()}
    return value


def client_label(data: Mapping[str, Any], *, show_content: bool) -> str:
    """How output names an event's client: display name (or name, or id), plus the email with
    ``show_content``."""
    client = data.get("client") or {}
    label = client.get("display_name") or client.get("name") or client.get("id") or "-"
    if show_content and client.get("email"):
        label += f" <{client['email']}>"
    return str(label)


def forget(store: JournaledStore, client_id: str, channel: str | None = None) -> dict[str, int]:
    """Erase a client's personal data in one transaction; what was erased, by kind
    (:data:`rulekit.store.erasure.FORGET_KINDS`, in that order)."""
    with store.transaction() as state:
        counts = state.forget_client(client_id, channel=channel)
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
