"""Chatra's webhook bodies, read tolerantly into plain records (``msgspec.Struct``: built for
every webhook, at a fraction of a dataclass's cost).

What is known about Chatra's payloads is partly reconstructed (see the plugin's docs), so this
module is liberal where the facts are uncertain and strict where a mistake would matter:

* required: a JSON object with a known ``eventName``, a ``client`` object with an ``id``, and
  messages that are objects with a string ``type`` (``messages`` a list, or a single ``message``);
* accepted either way: message text under ``text`` or ``message``; ``message``/``agent`` or
  ``messages``/``agents``; timestamps as epoch milliseconds (or seconds) or ISO 8601 strings;
* optional: everything else. A missing optional field, or one of an unexpected type, reads as
  None: a visitor's odd browser string must not cost the message it came with.

Anything that breaks a requirement raises :class:`rulekit.errors.ChannelError` with a one-line
message saying what is wrong; no other exception escapes :func:`parse_body`.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, NoReturn

import msgspec
from rulekit.channels.body import (
    LATEST_TIME,
    MAX_KEY_CHARS,
    bounded_key,
    bounded_time,
)
from rulekit.errors import ChannelError

EVENT_NAMES: tuple[str, ...] = ("chatStarted", "chatFragment", "chatTranscript")
"""The webhook events Chatra sends."""

FETCHED = "rulekitClientFetched"
"""The ``eventName`` of a body holding a client fetched from Chatra's API (not a webhook of
Chatra's: rulekit's own, see :mod:`rulekit_chatra.fetch`), read like a webhook's client."""

FETCHED_AT = "fetchedAt"
"""The key of a fetched body that says when it was fetched (nanoseconds since the epoch): the
``client_updated`` event of a fetch has no message id to tell it from an earlier fetch."""

CONTACT_KEYS: tuple[str, ...] = ("name", "email", "phone", "notes")
"""Keys of Chatra's visitor info that are contact data; any other key is the site's custom data."""

_NOT_CUSTOM = frozenset(CONTACT_KEYS)
_NO_CONTACT = (None,) * len(CONTACT_KEYS)


class ChatraMessage(msgspec.Struct):
    """One chat message. ``id`` is Chatra's, or derived from the content when Chatra sent none."""

    id: str
    type: str
    """``client``, ``agent``, or whatever else Chatra may send (treated as a system message)."""
    text: str | None = None
    created_at: datetime | None = None
    agent_id: str | None = None
    agent_name: str | None = None
    received_from: str | None = None
    kind: str | None = None
    """What the message holds: ``text``, or ``photo``/``document`` for a file (an image or
    not), whatever its caption; None for a message with neither."""


class ChatraAgent(msgspec.Struct):
    """An agent taking part in the chat."""

    id: str | None = None
    name: str | None = None
    email: str | None = None


class ChatraClient(msgspec.Struct):
    """The visitor. Contact and environment fields are named as in :class:`rulekit.event.Client`."""

    id: str
    chat_id: str | None = None
    chat_link: str | None = None
    display_name: str | None = None
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    notes: str | None = None
    ip: str | None = None
    browser: str | None = None
    os: str | None = None
    language: str | None = None
    browser_language: str | None = None
    country: str | None = None
    city: str | None = None
    last_visit: datetime | None = None
    custom: dict[str, Any] = msgspec.field(default_factory=dict)


class Payload(msgspec.Struct):
    """One webhook delivery, read."""

    event_name: str
    client: ChatraClient
    messages: tuple[ChatraMessage, ...] = ()
    agents: tuple[ChatraAgent, ...] = ()
    page: str | None = None
    """Where the chat started (``chatStartedPage.link``)."""
    raw: Any = None


def parse_body(body: bytes | str) -> Payload:
    """Decode and read a webhook body; raise :class:`ChannelError` if it is not a Chatra event."""
    try:
        data = _decode(body)
    except (msgspec.MsgspecError, RecursionError):
        # msgspec accepts a subset of what json.loads does (UTF-8 only, no lone surrogates, no
        # infinite floats) and decodes it alike: json.loads decides the rest as it always did.
        data = _loads(body)
    return read_payload(data)


def _loads(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except RecursionError:
        raise ChannelError("the body is not acceptable JSON: nested too deeply") from None
    except (ValueError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
        raise ChannelError(f"the body is not valid JSON: {exc}") from None


def client_key(data: Any) -> str | None:
    """The client id of a decoded body as :func:`read_payload` reads it (trimmed, an integer
    written as a string, a very long one digested), or None when it has none: the key of the
    conversation, so that bodies the parser files under one client share it."""
    client = data.get("client") if isinstance(data, dict) else None
    return _identifier(client.get("id")) if isinstance(client, dict) else None


def read_payload(data: Any) -> Payload:
    """Read decoded JSON as a Chatra webhook; raise :class:`ChannelError` if it is not one."""
    if not isinstance(data, dict):
        raise ChannelError(f"the body must be a JSON object, got {_kind(data)}")
    event_name = data.get("eventName")
    if not isinstance(event_name, str) or event_name not in _EVENT_NAMES:
        _refuse_event_name(event_name)
    client = _client(data.get("client"))
    page = data.get("chatStartedPage")
    return Payload(  # (positional: this runs for every webhook)
        event_name,
        client,
        _messages(data, client.id),
        _agents(data),
        (link.strip() or None)  # (``_string`` written out)
        if isinstance(page, dict) and isinstance(link := page.get("link"), str)
        else None,
        data,
    )


_decode = msgspec.json.Decoder().decode


def identifier(value: Any) -> str | None:
    """An id as a webhook's ids are read (a message's, a client's), or None: for ids read
    elsewhere (the message a reply created) to match the webhooks' own."""
    return _identifier(value)


_from_timestamp = datetime.fromtimestamp
_EVENT_NAMES = frozenset((*EVENT_NAMES, FETCHED))


def _refuse_event_name(event_name: Any) -> NoReturn:
    if event_name is None:
        raise ChannelError("the body has no eventName")
    if not isinstance(event_name, str):
        raise ChannelError(f"eventName must be a string, got {_kind(event_name)}")
    expected = ", ".join(EVENT_NAMES)
    raise ChannelError(f"unknown eventName {_show(event_name)} (expected one of {expected})")


# -- parts --------------------------------------------------------------------------------------


def _client(value: Any) -> ChatraClient:
    if value is None:
        raise ChannelError("the body has no client object")
    if not isinstance(value, dict):
        raise ChannelError(f"client must be an object, got {_kind(value)}")
    get = value.get
    raw_id = client_id = get("id")
    if not (  # (``_identifier``'s usual case written out, as in ``_message``)
        type(client_id) is str
        and 0 < len(client_id) <= MAX_KEY_CHARS
        and client_id.isascii()
        and client_id == client_id.strip()
        and "\x00" not in client_id
    ):
        client_id = _identifier(raw_id)
    if client_id is None:
        if raw_id is None:
            raise ChannelError("client.id is missing")
        if isinstance(raw_id, str):
            raise ChannelError("client.id is empty")
        raise ChannelError(f"client.id must be a string, got {_kind(raw_id)}")

    # ``info`` is Chatra's merge of ``basicInfo`` (pre-chat form, agents' edits) and
    # ``integrationData`` (what the site pushed); read all three in case one is left out.
    info = get("info")
    basic = get("basicInfo")
    integration = get("integrationData")
    if basic == info:
        basic = None  # (usually: ``info`` merges it with nothing else) read once
    if basic is None and integration is None:
        # (most webhooks: ``info`` alone) its contact fields read at once, its others custom
        if info and isinstance(info, dict):
            # (``_contact`` of one source, written out)
            name, email = info.get("name"), info.get("email")
            phone, notes = info.get("phone"), info.get("notes")
            name = (name.strip() or None) if isinstance(name, str) else None
            email = (email.strip() or None) if isinstance(email, str) else None
            phone = (phone.strip() or None) if isinstance(phone, str) else None
            notes = (notes.strip() or None) if isinstance(notes, str) else None
            custom = (
                {} if info.keys() <= _NOT_CUSTOM else _custom_of(info)
            )  # (usually nothing but contact fields)
        else:
            name = email = phone = notes = None
            custom = {}
    else:
        sources = [s for s in (info, basic, integration) if s and isinstance(s, dict)]
        name, email, phone, notes = _contact(sources) if sources else _NO_CONTACT
        custom = {}
        for source in (info, integration):
            if source and isinstance(source, dict) and not source.keys() <= _NOT_CUSTOM:
                custom.update(_custom_of(source))
    chat_id = get("chatId")
    if not (  # (as the client's id)
        type(chat_id) is str
        and 0 < len(chat_id) <= MAX_KEY_CHARS
        and chat_id.isascii()
        and chat_id == chat_id.strip()
        and "\x00" not in chat_id
    ):
        chat_id = _identifier(chat_id)
    # (``_string`` written out for each text field: this is most of the reading)
    link, shown = get("chatLink"), get("displayedName")
    ip, browser, system = get("ip"), get("browser"), get("os")
    language, browser_language = get("chatLanguage"), get("browserLanguage")
    country, city = get("country"), get("city")
    visit = get("lastVisit")
    return ChatraClient(  # (positional, in the fields' order)
        client_id,
        chat_id,
        (link.strip() or None) if isinstance(link, str) else None,
        (shown.strip() or None) if isinstance(shown, str) else None,
        name,
        email,
        phone,
        notes,
        (ip.strip() or None) if isinstance(ip, str) else None,
        (browser.strip() or None) if isinstance(browser, str) else None,
        (system.strip() or None) if isinstance(system, str) else None,
        (language.strip() or None) if isinstance(language, str) else None,
        (browser_language.strip() or None) if isinstance(browser_language, str) else None,
        (country.strip() or None) if isinstance(country, str) else None,
        (city.strip() or None) if isinstance(city, str) else None,
        timestamp(visit.get("startedAt")) if isinstance(visit, dict) else None,
        custom,
    )


def _custom_of(source: dict[str, Any]) -> dict[str, Any]:
    """The custom data of one source: its keys that are not contact fields."""
    return {k: v for k, v in source.items() if k not in _NOT_CUSTOM}


def _contact(sources: list[dict[str, Any]]) -> list[str | None]:
    """The contact fields (:data:`CONTACT_KEYS`), each from the first source that has it."""
    found = []
    for key in CONTACT_KEYS:
        value = None
        for source in sources:
            text = source.get(key)
            if isinstance(text, str) and (value := text.strip()):
                break
        found.append(value or None)
    return found


def _messages(data: dict[str, Any], client_id: str) -> tuple[ChatraMessage, ...]:
    single = data.get("message")
    many = data.get("messages")
    if many is None:
        return () if single is None else (_message("message", single, client_id),)
    if not isinstance(many, list):
        raise ChannelError(f"messages must be a list, got {_kind(many)}")
    if single is None and len(many) == 1:
        return (_message(0, many[0], client_id),)  # (a fragment's usual one message)
    found = [_message(index, item, client_id) for index, item in enumerate(many)]
    if single is not None:
        found.insert(0, _message("message", single, client_id))
    return tuple(found)


def _message(where: str | int, value: Any, client_id: str) -> ChatraMessage:
    """One message; ``where`` is its key, or its index in ``messages`` (for error messages)."""
    if not isinstance(value, dict):
        raise ChannelError(f"{_where(where)} must be an object, got {_kind(value)}")
    get = value.get
    kind = get("type")
    if not isinstance(kind, str):
        problem = "has no type" if kind is None else f"type must be a string, got {_kind(kind)}"
        raise ChannelError(f"{_where(where)} {problem}")
    text = get("text")
    if not isinstance(text, str):
        if text is None and isinstance(other := get("message"), str):
            text = other  # (``_text``'s usual case, written out)
        else:
            text = _text(where, value)
    # (``timestamp`` and ``_identifier`` written out for the usual values: this runs for every
    # message)
    created_at = get("createdAt")
    if type(created_at) is int:
        if _SECONDS_BELOW <= created_at <= _LATEST_MS:
            created_at = _from_timestamp(created_at / 1000, UTC)
        else:  # (seconds, or out of range: ``timestamp`` decides)
            created_at = timestamp(created_at)
    else:
        created_at = timestamp(created_at)
    message_id = get("id")
    if not (
        type(message_id) is str
        and 0 < len(message_id) <= MAX_KEY_CHARS
        and message_id.isascii()
        and message_id == message_id.strip()
        and "\x00" not in message_id
    ):
        message_id = _identifier(message_id)
        if message_id is None:
            # No id: derive one from the content, so a redelivery still gets the same one.
            when = created_at.isoformat() if created_at else ""
            parts = [client_id, kind, when, text or ""]
            digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass"))
            message_id = "content-" + digest.hexdigest()[:20]
    agent_id = get("agentId")
    if agent_id is not None and not (  # (as the message's id)
        type(agent_id) is str
        and 0 < len(agent_id) <= MAX_KEY_CHARS
        and agent_id.isascii()
        and agent_id == agent_id.strip()
        and "\x00" not in agent_id
    ):
        agent_id = _identifier(agent_id)
    agent_name = get("agentName")
    received_from = get("receivedFrom")
    attached = get("file")
    kind_of = (None if attached is None else _file_kind(attached)) or ("text" if text else None)
    return ChatraMessage(  # (positional: this runs for every message)
        message_id,
        kind,
        text,
        created_at,
        agent_id,
        # (``_string`` written out)
        (agent_name.strip() or None) if isinstance(agent_name, str) else None,
        (received_from.strip() or None) if isinstance(received_from, str) else None,
        kind_of,
    )


def _file_kind(attached: Any) -> str | None:
    """The kind of a message with a ``file`` (``{name, size, isImage, url, ...}``, reconstructed
    from Brevo's): ``photo`` for an image, else ``document``; a ``file`` that is no object,
    or an empty one, is no file."""
    if isinstance(attached, dict) and attached:
        return "photo" if attached.get("isImage") is True else "document"
    return None


def _where(where: str | int) -> str:
    return f"messages[{where}]" if isinstance(where, int) else where


def _text(where: str | int, message: dict[str, Any]) -> str | None:
    """A message's text when ``text`` is not a string: real consumers read ``text`` or
    ``message``; accept either."""
    for key in ("text", "message"):
        candidate = message.get(key)
        if isinstance(candidate, str):
            return candidate
        if candidate is not None:
            raise ChannelError(f"{_where(where)}.{key} must be a string, got {_kind(candidate)}")
    return None


def _agents(data: dict[str, Any]) -> tuple[ChatraAgent, ...]:
    single = data.get("agent")
    many = data.get("agents")
    items: list[Any] = many if isinstance(many, list) else []
    if single is not None:
        items = [single, *items]
    elif not items:
        return ()  # (most webhooks)
    found = []
    for item in items:
        if isinstance(item, dict):
            get = item.get
            name, email = get("name"), get("email")
            found.append(
                ChatraAgent(  # (``_string`` written out)
                    _identifier(get("id")),
                    (name.strip() or None) if isinstance(name, str) else None,
                    (email.strip() or None) if isinstance(email, str) else None,
                )
            )
    return tuple(found)


# -- values -------------------------------------------------------------------------------------


def timestamp(value: Any) -> datetime | None:
    """A Chatra time as an aware UTC datetime: epoch milliseconds (a number or a string of
    digits; one below :data:`SECONDS_BELOW` is epoch *seconds*, as other services and older
    payloads write them: no chat was written in 1973), an ISO 8601 string (naive means UTC), or
    either wrapped as Meteor's EJSON writes a date (``{"$date": ...}``). Anything else is None,
    and so is a time outside :func:`rulekit.channels.body.bounded_time`'s range (the year 9999
    is no time to set a timer from)."""
    if type(value) is int:  # (Chatra's: tried first, without the checks below)
        if _SECONDS_BELOW <= value <= _LATEST_MS:
            return datetime.fromtimestamp(value / 1000, UTC)
        if value >= _SECONDS_BELOW:
            return None
    if isinstance(value, dict) and len(value) == 1 and "$date" in value:
        value = value["$date"]
        if isinstance(value, dict):
            return None  # (``{"$numberLong": ...}`` and deeper: not a Chatra time)
        return timestamp(value)
    try:
        if isinstance(value, str):
            text = value.strip()
            if not text.isdigit():
                parsed = datetime.fromisoformat(text)
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=UTC)
                return bounded_time(parsed.astimezone(UTC))
            value = int(text)
        if isinstance(value, (int, float)) and value is not True and value is not False:
            seconds = value if abs(value) < SECONDS_BELOW else value / 1000
            return bounded_time(datetime.fromtimestamp(seconds, UTC))
    except (ValueError, OverflowError, OSError):
        pass
    return None


SECONDS_BELOW = 10**11
"""Epoch numbers below this are seconds: as milliseconds it is March 1973, as seconds the year
5138 (beyond the times a webhook may tell), so no time is read both ways."""

_SECONDS_BELOW = SECONDS_BELOW
_LATEST_MS = int(LATEST_TIME.timestamp() * 1000)


def _string(value: Any) -> str | None:
    if isinstance(value, str):
        value = value.strip()
        return value or None
    return None


def _identifier(value: Any) -> str | None:
    """An id: a non-empty string, or an integer written as one (sites may bind numeric ids);
    a very long one is replaced by its digest (ids are stored as indexed keys)."""
    if isinstance(value, str):
        key = value.strip()
        if 0 < len(key) <= MAX_KEY_CHARS and key.isascii() and "\x00" not in key:
            return key  # the usual id, which ``bounded_key`` keeps as it is
        return bounded_key(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return bounded_key(str(value))
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."
