"""The daemon's logs: text or JSON lines, secrets redacted, controls escaped, fields capped.

Every handler the daemon installs (for rulekit's records and uvicorn's) gets the same filters
and a formatter that together guarantee, for every record:

* **no webhook secret**: :func:`redact` replaces whatever follows ``webhooks/<channel>/`` with
  ``***`` in any shape (doubled or missing slashes, trailing slash, query string,
  percent-encoding), and every configured secret wherever else it appears, literally or
  percent-encoded. Access lines log the decoded path with :func:`redact_path`;
* **no personal data** unless ``logging.content`` or debug level allows it: emails are masked
  (``<email>``) by :func:`mask_emails`, and what a record quotes of its event's client (the
  values :func:`~rulekit.store.forms.hidden_values` finds, which :func:`log` is given as
  ``personal``: a message text, a phone, an IP address ..., in any stored form) is
  :data:`HIDDEN`, as audit output hides it without ``--show-content``;
* **one record, one line** (text format): the message and every field are escaped with
  :func:`rulekit.safetext.escape_controls`; a traceback follows on lines indented by four
  spaces, so nothing a client sends can start a line of its own. JSON lines escape controls,
  C1 and bidi characters (:func:`rulekit.safetext.dumps_json`);
* **bounded size and time**: the message is cut to :data:`MESSAGE_LIMIT` characters, each
  field to :data:`FIELD_LIMIT`, a traceback to :data:`EXCEPTION_LIMIT`; everything above runs
  in time linear in the length of the record, so no value can stall the daemon by being logged.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, SecretStr

from rulekit.config import Config, LoggingSettings
from rulekit.safetext import dumps_json, escape_controls
from rulekit.store.forms import PersonalValues

LOGGER = "rulekit"

FIELD_LIMIT = 2000
"""Characters kept of each field of a log record (after escaping)."""

MESSAGE_LIMIT = 8000
"""Characters kept of a log message (after escaping)."""

EXCEPTION_LIMIT = 20_000
"""Characters kept of a traceback."""

MARGIN = 4096
"""How far past a limit redaction and masking look, so that what is kept is cleaned whole."""

REDACTED = "***"
HIDDEN = "[hidden]"
"""What a record's quote of a client's personal value becomes (as in audit output)."""
_HANDLER = "rulekit"

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


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the secret part of every webhook path, and every one of ``secrets``
    (literal, or percent-encoded in any way), replaced by ``***``."""
    text = _WEBHOOK_PATH.sub(_webhook_path, text)
    known = [secret for secret in secrets if secret]
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    if known and "%" in text:
        decoded = text
        for _ in range(3):  # doubly encoded is still encoded
            decoded = unquote(decoded)
            if any(secret in decoded for secret in known):
                # the secret was percent-encoded: log the decoded text, redacted
                return redact(decoded, known)
            if "%" not in decoded:
                break
    return text


def redact_path(path: str) -> str:
    """A request path as logged: for a path whose first segment is ``webhooks`` (any slashes,
    any case), everything after the channel segment is ``***``; other paths unchanged."""
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


def secret_values(config: Config) -> list[str]:
    """Every secret of ``config``: the webhook secret of each channel, and each secret setting
    (``SecretStr``) of channel and integration settings, at any depth."""
    found: list[str] = []
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
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return found


def _exception_text(record: logging.LogRecord) -> str | None:
    if record.exc_text is None and record.exc_info:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    return record.exc_text


def _bounded(text: str, limit: int, clean: Callable[[str], str]) -> str:
    """``clean(text)`` cut to ``limit`` characters. ``clean`` sees at most
    ``limit + MARGIN`` characters (so its time is bounded too), enough that an address or a
    secret that starts before the cut is seen whole."""
    if len(text) <= limit:
        return clean(text)
    cleaned = clean(text[: limit + MARGIN])
    if len(cleaned) <= limit:
        return cleaned
    return f"{cleaned[:limit]}…[{len(text) - limit} more characters]"


class CleanRecords(logging.Filter):
    """Rewrites each record's message, string fields and traceback: webhook secrets (and each
    value ``secrets`` returns) redacted, emails masked and the record's ``personal`` values
    hidden when ``emails`` is true (content may not be logged), each cut to its limit
    (:data:`MESSAGE_LIMIT`, :data:`FIELD_LIMIT`, :data:`EXCEPTION_LIMIT`)."""

    def __init__(
        self, secrets: Callable[[], Iterable[str]] | None = None, *, emails: bool = False
    ) -> None:
        super().__init__()
        self.secrets = secrets
        self.emails = emails

    def filter(self, record: logging.LogRecord) -> bool:
        known = list(self.secrets()) if self.secrets is not None else []

        personal = getattr(record, "personal", None)
        if not self.emails or not isinstance(personal, PersonalValues):
            personal = None  # content may be logged, or the record quotes no client

        def clean(text: str) -> str:
            text = redact(text, known)
            if personal is not None:
                text = personal.replace_in(text, HIDDEN)
            return mask_emails(text) if self.emails else text

        message = record.getMessage()
        cleaned = _bounded(message, MESSAGE_LIMIT, clean)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                str(key)[:100]: _bounded(value, FIELD_LIMIT, clean)
                if isinstance(value, str)
                else value
                for key, value in fields.items()
            }
        exception = _exception_text(record)
        if exception:
            record.exc_text = _bounded(exception, EXCEPTION_LIMIT, clean)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``;
    controls, C1 and bidi characters written as JSON escapes."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        exception = _exception_text(record)
        if exception:
            data["exception"] = exception
        return dumps_json(data, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...`` on one line, every value escaped
    (:func:`rulekit.safetext.escape_controls`); a traceback follows, each of its lines escaped
    and indented by four spaces."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{self.formatTime(record)} {record.levelname} {escape_controls(record.name)}: "
            f"{escape_controls(record.getMessage())}"
        )
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += "".join(
                f" {escape_controls(str(key))}={escape_controls(str(value))}"
                for key, value in fields.items()
            )
        exception = _exception_text(record)
        if exception:
            line += "".join("\n    " + escape_controls(part) for part in exception.split("\n"))
        return line


def configure_logging(
    settings: LoggingSettings,
    stream: Any = None,
    secrets: Callable[[], Iterable[str]] | None = None,
) -> None:
    """Send rulekit's and uvicorn's records to ``stream`` (stderr) in the configured format,
    and every other library's warnings and errors (through the root logger) the same way;
    ``secrets`` returns the values to redact besides webhook paths (see :func:`secret_values`)."""
    formatter = JsonFormatter() if settings.format == "json" else TextFormatter()
    cleaner = CleanRecords(secrets, emails=not content_allowed(settings))
    handler, others = (logging.StreamHandler(stream or sys.stderr) for _ in range(2))
    for each in (handler, others):
        each.set_name(_HANDLER)
        each.setFormatter(formatter)
        each.addFilter(cleaner)
    others.setLevel(logging.WARNING)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(others)
    level = getattr(logging, settings.level.upper())
    for name in (LOGGER, "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    # uvicorn's own access log prints the raw path; ours (rulekit.access) redacts it
    logging.getLogger("uvicorn.access").disabled = True


def content_allowed(settings: LoggingSettings) -> bool:
    """Whether message texts and emails may be logged."""
    return settings.content or settings.level == "debug"


def log(
    logger: logging.Logger,
    level: int,
    message: str,
    *,
    exc_info: bool = False,
    personal: PersonalValues | None = None,
    **fields: Any,
) -> None:
    """Log ``message`` with structured ``fields`` (JSON keys, or ``key=value`` in text);
    ``personal``: the client's values the record may quote (an action's error quoting what it
    sent), hidden unless content may be logged."""
    if logger.isEnabledFor(level):
        extra: dict[str, Any] = {"fields": fields}
        if personal:
            extra["personal"] = personal
        logger.log(level, message, exc_info=exc_info, extra=extra)


_access = logging.getLogger(f"{LOGGER}.access")


def access_logged() -> bool:
    """Whether requests are logged (:func:`access_line` writes anything) at the current level."""
    return _access.isEnabledFor(logging.INFO)


def access_line(method: str, path: str, status: int, seconds: float, client: str | None) -> None:
    """One access-log record for a request; ``path`` (decoded) passes :func:`redact_path`."""
    if not _access.isEnabledFor(logging.INFO):  # the usual case under load: nothing to build
        return
    log(
        _access,
        logging.INFO,
        f"{method} {redact_path(path)} {status}",
        ms=round(seconds * 1000, 1),
        client=client,
    )
