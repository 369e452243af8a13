"""What the daemon's logs and access lines keep of what could identify or authorize: webhook
secrets and configured secrets redacted in every form, email addresses masked, and ids of
events, conversations and lanes named by a keyed hash (:func:`log_id`). Every function here runs
in time linear in its text (:mod:`rulekit.runtime.logs` bounds the text first)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import unquote

from rulekit.safetext import replace_folded
from rulekit.secrets import folded_forms

REDACTED = "***"

# ``webhooks/`` + slashes + the channel segment; the optional rest (from the next slash to the
# end of the token) is where the secret is. Linear: the match can only start at "webhooks",
# the slash run and the channel segment are disjoint classes, and a match never fails once the
# channel segment has a character, so no region is scanned twice.
_WEBHOOK_PATH = re.compile(r"(webhooks/+[^/\s\"'?#<>]+)(/[^\s\"'<>]*)?", re.IGNORECASE)

# where an email may start or end: the separators of the old pattern
# ``[^S]+@[^S]+\.[A-Za-z]{2,}`` with S = these characters; split on, never backtracked into
_EMAIL_SEPARATORS = re.compile(r"([\s/:@\"'<>=,]+)")
_LETTERS = re.compile(r"[A-Za-z]{2,}")


def _webhook_path(match: re.Match[str]) -> str:
    return match.group(1) + ("/" + REDACTED if match.group(2) else "")


def redact_webhook_paths(text: str) -> str:
    """``text`` with whatever follows ``webhooks/<channel>/`` (the secret) replaced by ``***``."""
    return _WEBHOOK_PATH.sub(_webhook_path, text)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the secret part of every webhook path, and every one of ``secrets`` (in
    each form of :func:`~rulekit.secrets.folded_forms`, or percent-encoded again in
    any way), replaced by ``***``."""
    return redact_forms(redact_webhook_paths(text), folded_forms(tuple(secrets)))


def redact_forms(text: str, forms: tuple[str, ...]) -> str:
    """``text`` with each of ``forms`` (case-folded secrets), plain or percent-encoded up to
    three times, replaced by ``***``."""
    if not forms:
        return text
    if holds_form(text, forms):
        text = replace_folded(text, forms, REDACTED)
    if "%" in text:
        decoded = text
        for _ in range(3):  # doubly encoded is still encoded
            decoded = unquote(decoded)
            if holds_form(decoded, forms):
                # the secret was percent-encoded: log the decoded text, redacted
                return redact_forms(decoded, forms)
            if "%" not in decoded:
                break
    return text


def holds_form(text: str, forms: tuple[str, ...]) -> bool:
    """Whether ``text`` holds one of ``forms`` (case-folded), in any case."""
    folded = text.casefold()
    return any(form in folded for form in _shortest(forms))


@lru_cache(maxsize=64)
def _shortest(forms: tuple[str, ...]) -> tuple[str, ...]:
    """Those of ``forms`` that hold none of the others: a text holds one of ``forms`` exactly
    when it holds one of these (fewer to look for in every record)."""
    return tuple(
        form for form in forms if not any(other != form and other in form for other in forms)
    )


CONVERSATION_PATHS = "/console/api/conversations/"
"""Where a console path names a conversation (its id holds a Telegram chat's)."""
CONVERSATION_CALLS = frozenset({"messages", "client", "assign", "tags", "priority"})
"""What may follow a conversation's id in a console path."""


def redact_path(path: str) -> str:
    """A request path as logged: for a path whose first segment is ``webhooks`` (any slashes,
    any case), everything after the channel segment is ``***``; in a console path naming a
    conversation, its id is :func:`log_id`'s; other paths unchanged."""
    if path.startswith(CONVERSATION_PATHS) and len(path) > len(CONVERSATION_PATHS):
        conversation, slash, call = path[len(CONVERSATION_PATHS) :].rpartition("/")
        if not slash or call not in CONVERSATION_CALLS:
            conversation, call = path[len(CONVERSATION_PATHS) :], ""
        return CONVERSATION_PATHS + log_id(conversation) + (f"/{call}" if call else "")
    segments = path.split("/")
    named = [index for index, segment in enumerate(segments) if segment][:2]
    if not named or segments[named[0]].lower() != "webhooks":
        return path
    if len(named) < 2:
        return path
    channel = named[1]
    if channel == len(segments) - 1:
        return path
    return "/".join(segments[: channel + 1]) + "/" + REDACTED


def mask_emails(text: str) -> str:
    """``text`` with each email address replaced by ``<email>``: the same matches as the
    pattern ``[^S]+@[^S]+\\.[A-Za-z]{2,}`` (S: whitespace and ``/:@"'<>=,``), found in linear
    time. The text is split once into words and separators; an address is a word, a lone
    ``@``, and the longest head of the next word ending in ``.`` and two or more letters."""
    if "@" not in text:
        return text
    parts = _EMAIL_SEPARATORS.split(text)  # words at even indexes, separators at odd ones
    out: list[str] = []
    word = parts[0]  # what is left of the current word (after an address found in it)
    for index in range(1, len(parts), 2):
        separator, following = parts[index], parts[index + 1]
        if separator == "@" and word:
            end = _domain_end(following)
            if end:
                out.append("<email>")
                word = following[end:]
                continue
        out.append(word)
        out.append(separator)
        word = following
    out.append(word)
    return "".join(out)


def _domain_end(word: str) -> int:
    """Where the domain of an address at the start of ``word`` ends (0: none): after the last
    ``.`` that has at least one character before it and two or more ASCII letters after it."""
    dot = word.rfind(".")
    while dot >= 1:
        letters = _LETTERS.match(word, dot + 1)
        if letters is not None:
            return letters.end()
        dot = word.rfind(".", 0, dot)
    return 0


_log_key = b""
"""The key of :func:`log_id`'s hashes in this process (:func:`use_log_key`)."""


def use_log_key(key: bytes | None) -> None:
    """Hash ids with ``key`` from now on: the store's (:meth:`~rulekit.store.base.
    JournaledState.log_key`), which the daemon reads as it starts."""
    global _log_key
    _log_key = key or b""


def log_id(value: str, *, key: bytes | None = None) -> str:
    """How the log names an event, conversation or lane: ids are made of the provider's, and
    a Telegram event's holds the client's chat id (``telegram:<chat>:<message>``), so a line
    gives the id's channel (what precedes its first colon) and a short hash of the whole,
    the same in every daemon and every run on one store (``telegram~3f9a0c1b2d4e``): lines
    about one event can be found together, without the id (rulekit's own numbers, of inbox
    items, jobs and timers, are logged as they are). The hash is keyed with the store's
    secret key (``key``, else :func:`use_log_key`'s): a chat id has too few digits for an
    unkeyed hash of it to hide it from whoever hashes every one."""
    channel, colon, _ = value.partition(":")
    digest = hashlib.blake2b(
        value.encode("utf-8", "surrogatepass"),
        digest_size=6,
        key=_log_key if key is None else key,
        person=b"rulekit log id",
    ).hexdigest()
    if colon and 0 < len(channel) <= 40 and channel.replace("-", "").replace("_", "").isalnum():
        return f"{channel}~{digest}"
    return f"~{digest}"
