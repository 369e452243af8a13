"""Keeping credentials out of messages: every error text an action builds passes :func:`redact`;
the daemon's log hides the same forms of every configured secret (:func:`folded_forms`).

A service quoting what it received rarely quotes it as sent: a JSON answer escapes ``/`` as
``\\/`` (PHP does by default), an error echoes the URL percent-encoded, or with ``+`` for
spaces, an exception message quotes it with ``repr``. So each secret is hidden in each of those
forms too (:func:`secret_forms`), in any letter case (``%2f`` or ``%2F``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from pydantic import BaseModel, SecretStr

from rulekit.safetext import replace_folded

if TYPE_CHECKING:
    from rulekit.config import Config

MASK = "***"


def secret_parts(secret: str | None) -> list[str]:
    """What to hide for ``secret``: itself and, for ``id:secret`` tokens (Telegram), the part
    after the colon (it may show up alone, e.g. percent-encoded URLs split at the colon)."""
    if not secret:
        return []
    parts = [secret]
    _, colon, tail = secret.partition(":")
    if colon and len(tail) >= 8:
        parts.append(tail)
    return parts


def secret_forms(secret: str | None) -> set[str]:
    """Each part of ``secret`` (:func:`secret_parts`) as sent, percent-encoded (``/`` kept or
    not, ``+`` for spaces) and, each of those, as JSON string contents (ASCII-only or not,
    ``/`` escaped or not) and as a Python ``repr`` quotes it."""
    forms: set[str] = set()
    for part in secret_parts(secret):
        for text in {part, quote(part, safe=""), quote(part, safe="/"), quote_plus(part, safe="")}:
            forms.add(repr(text)[1:-1])
            for ascii_only in (True, False):
                encoded = json.dumps(text, ensure_ascii=ascii_only)[1:-1]
                forms.update((text, encoded, encoded.replace("/", "\\/")))
    return forms


def secret_pieces(secret: str) -> list[str]:
    """``secret`` and what of it may be quoted alone, each piece of eight characters or more (a
    shorter one would hide common words): each word (the token of ``Bearer <token>``), for a
    URL its password, path, query and their pieces (``/services/T0/B0/<token>``,
    ``?key=<token>``), and its base64 form (SMTP ``AUTH LOGIN``)."""
    pieces = [base64.b64encode(secret.encode()).decode()]
    words = secret.split()
    if len(words) > 1:
        pieces.extend(words)
    if "://" in secret:
        try:
            parts = urlsplit(secret)
            password = parts.password
        except ValueError:
            password, parts = None, None
        if parts is not None:
            values = [item.partition("=")[2] for item in parts.query.split("&")]
            pieces.extend([password or "", parts.path, parts.query, *parts.path.split("/")])
            pieces.extend(values)
    return [secret, *(piece for piece in pieces if len(piece) >= 8)]


@lru_cache(maxsize=64)
def folded_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """Every form (:func:`secret_forms`) of each of ``secrets`` and of its pieces
    (:func:`secret_pieces`), case-folded, longest first: what the daemon's log hides. Cached:
    the log asks for the same secrets at every record."""
    forms = {
        form.casefold()
        for secret in secrets
        if secret
        for piece in secret_pieces(secret)
        for form in secret_forms(piece)
        if form
    }
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret (and its distinctive parts), in every form of
    :func:`secret_forms` and any letter case, replaced by ``***``."""
    forms = {form.casefold() for secret in secrets for form in secret_forms(secret) if form}
    if not forms or not text:
        return text
    return replace_folded(text, sorted(forms, key=len, reverse=True), MASK)


def secret_values(config: Config) -> list[str]:
    """Every secret of ``config``: the webhook secret of each channel, each secret setting
    (``SecretStr``) of channel and integration settings, at any depth (with, next to a
    ``username``, the ``AUTH PLAIN`` forms of a ``password``), and the password of the storage
    URL."""
    found: list[str] = []
    try:
        password = urlsplit(config.raw.storage).password
    except ValueError:
        password = None
    if password:
        found.extend((password, unquote(password)))
    models: list[Any] = [channel.settings for channel in config.channels.values()]
    models.extend(config.integrations.values())
    # nested too: the targets of ``integrations: {webhooks: {crm: {secret, headers}}}``
    stack, seen = models, 0
    while stack and seen < 100_000:
        value = stack.pop()
        seen += 1
        if isinstance(value, SecretStr):
            if value.get_secret_value():
                found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            stack.extend(getattr(value, name, None) for name in type(value).model_fields)
            found.extend(_auth_plain(value))
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return found


def _auth_plain(settings: BaseModel) -> list[str]:
    """The base64 forms SMTP ``AUTH PLAIN`` sends of ``settings``' username and password."""
    username, password = getattr(settings, "username", None), getattr(settings, "password", None)
    if not isinstance(username, str) or not isinstance(password, SecretStr):
        return []
    secret = password.get_secret_value()
    if not secret:
        return []
    raws = (f"\0{username}\0{secret}", f"{username}\0{secret}")
    return [base64.b64encode(raw.encode()).decode() for raw in raws]


MIN_SECRET_IN_VALUE = 6
"""Characters a secret needs for a variable that holds it among other text to be left out by
:func:`without_secrets` (a shorter one would take harmless variables with it)."""


def without_secrets(environ: Mapping[str, str], secrets: Iterable[str]) -> dict[str, str]:
    """``environ`` without the variables that hold one of ``secrets`` (the whole value, or
    within it: a database URL holding a password): the environment of a program rulekit starts
    that needs none of them (a sound player)."""
    whole = {secret for secret in secrets if secret}
    inside = [secret for secret in whole if len(secret) >= MIN_SECRET_IN_VALUE]
    return {
        name: value
        for name, value in environ.items()
        if value not in whole and not any(secret in value for secret in inside)
    }


def written_in_open_file(config: Config) -> str | None:
    """What says that the config file holds secrets written in it (not taken from the
    environment with ``${NAME}``: a value, or a ``${NAME:-default}``'s default) while every
    user of the machine can read it, or None. A secret that short (under
    :data:`MIN_SECRET_IN_VALUE` characters) is not looked for."""
    path = config.path
    if path is None:
        return None
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if not mode & 0o004:
        return None
    written = {s for s in secret_values(config) if len(s) >= MIN_SECRET_IN_VALUE and s in text}
    if not written:
        return None
    return (
        f"{path} is readable by every user of this machine (mode {mode:04o}) and holds "
        f"{len(written)} secret(s) written in it: take them from the environment "
        f"(${{NAME}}), or chmod 600 {path}"
    )


def same_secret(given: str, wanted: str) -> bool:
    """Whether ``given`` is the secret ``wanted`` ("" is no secret: nothing is), in time that
    depends on neither: their SHA-256 digests are compared (``hmac.compare_digest`` is
    constant time only for inputs of one length), and a missing secret is compared too."""
    given_digest = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    wanted_digest = hashlib.sha256(wanted.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(given_digest, wanted_digest) and bool(wanted)


MIN_WEBHOOK_SECRET = 16
"""Characters a channel's ``webhook_secret`` should have at least: it is the one credential of
``POST /webhooks/<channel>/<secret>``, and wrong ones are answered as fast as anyone sends
them (404, never throttled), so a short one can be found by trying."""


def guessable_webhook_secrets(config: Config) -> str | None:
    """What says that some channels' ``webhook_secret`` is shorter than
    :data:`MIN_WEBHOOK_SECRET` characters, or None. (Never the secrets themselves.)"""
    short = sorted(
        name
        for name, channel in config.channels.items()
        if (secret := getattr(channel.settings, "webhook_secret", None)) is not None
        and 0 < len(secret.get_secret_value()) < MIN_WEBHOOK_SECRET
    )
    if not short:
        return None
    named = ", ".join(repr(name) for name in short)
    return (
        f"the webhook_secret of channel(s) {named} is shorter than {MIN_WEBHOOK_SECRET} "
        "characters: anyone who can reach /webhooks/ can find it by trying (wrong secrets are "
        "answered 404 as fast as they come); use a long random string"
    )
