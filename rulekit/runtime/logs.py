"""The daemon's logs: text or JSON lines, secrets redacted, controls escaped, fields capped.

Every handler the daemon installs (for rulekit's records and uvicorn's) gets the same filters
and a formatter that together guarantee, for every record:

* **no secret**: :func:`redact` replaces whatever follows ``webhooks/<channel>/`` with
  ``***`` in any shape (doubled or missing slashes, trailing slash, query string,
  percent-encoding), and every configured secret wherever else it appears, in every form an
  action's error hides (:func:`rulekit.secrets.folded_forms`: JSON-escaped,
  percent-encoded, ``repr``-quoted, the token of ``Bearer <token>`` ..., in any case), and
  percent-encoded again. The formatted line is checked once more, so that escaping a value for
  the line cannot make a form of a secret either. Access lines log the decoded path with
  :func:`redact_path`;
* **no personal data** unless ``logging.content`` allows it (debug level does not): emails
  are masked (``<email>``) by :func:`mask_emails`, and what a record quotes of its event's
  client (the values :func:`~rulekit.store.forms.hidden_values` finds, which :func:`log` is
  given as ``personal``: a message text, a phone, an IP address ..., in any stored form) is
  :data:`HIDDEN`, as audit output hides it without ``--show-content``;
* **no exception message** unless content may be logged: a traceback keeps each exception's
  type and each frame's file and line, and its messages are :data:`HIDDEN`
  (:func:`~rulekit.runtime.tracebacks.hidden_traceback`): they may quote a client or a secret
  (a store's error repeating a value, a validation error its input). So is an exception a
  line quotes (``log(..., failure=exc)``, or an argument of ``logger.warning("...: %s", exc)``):
  the line keeps its type (:func:`~rulekit.runtime.tracebacks.hidden_message`);
* **one record, one line** (text format): the message and every field are escaped with
  :func:`rulekit.safetext.escape_controls`; a traceback follows on lines indented by four
  spaces, so nothing a client sends can start a line of its own. JSON lines escape controls,
  C1 and bidi characters (:func:`rulekit.safetext.dumps_json`);
* **bounded size and time**: the message is cut to :data:`MESSAGE_LIMIT` characters, each
  field to :data:`FIELD_LIMIT`, a traceback to :data:`EXCEPTION_LIMIT`; everything above runs
  in time linear in the length of the record, so no value can stall the daemon by being logged.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from rulekit.config import LoggingSettings
from rulekit.runtime.redaction import REDACTED, holds_form, redact_forms, redact_webhook_paths
from rulekit.runtime.redaction import log_id as log_id  # importable from here too
from rulekit.runtime.redaction import mask_emails as mask_emails
from rulekit.runtime.redaction import redact as redact
from rulekit.runtime.redaction import redact_path as redact_path
from rulekit.runtime.redaction import use_log_key as use_log_key
from rulekit.runtime.tracebacks import HIDDEN as TRACEBACK_HIDDEN
from rulekit.runtime.tracebacks import hidden_message, hidden_traceback
from rulekit.safetext import dumps_json, escape_controls
from rulekit.secrets import folded_forms
from rulekit.secrets import secret_values as secret_values  # importable from here too
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

HIDDEN = TRACEBACK_HIDDEN
"""What a record's quote of a client's personal value becomes (as in audit output)."""
_HANDLER = "rulekit"


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
    """Rewrites each record's message, fields (strings at any depth) and traceback: webhook
    secrets (and each value ``secrets`` returns, in each of its forms) redacted, emails masked
    and the record's ``personal`` values hidden when ``emails`` is true (content may not be
    logged), each cut to its limit (:data:`MESSAGE_LIMIT`, :data:`FIELD_LIMIT`,
    :data:`EXCEPTION_LIMIT`); when content may not be logged, a traceback's messages are hidden
    too (:func:`~rulekit.runtime.tracebacks.hidden_traceback`). The forms redacted are left on
    the record (``secret_forms``) for the formatters' last check of the line."""

    def __init__(
        self, secrets: Callable[[], Iterable[str]] | None = None, *, emails: bool = False
    ) -> None:
        super().__init__()
        self.secrets = secrets
        self.emails = emails

    def filter(self, record: logging.LogRecord) -> bool:
        # each handler's filter starts from the record as it was logged: one that may show
        # content, run first, must not leave its rendering (an exception's message written
        # into the text) for another that may not
        original = getattr(record, "logged_as", None)
        if original is None:
            record.logged_as = (record.msg, record.args)
        else:
            record.msg, record.args = original
        if self.emails and record.args:
            record.args = _hidden_failures(record.args)
        forms = folded_forms(tuple(self.secrets())) if self.secrets is not None else ()
        record.secret_forms = forms

        personal = getattr(record, "personal", None)
        if not self.emails or not isinstance(personal, PersonalValues):
            personal = None  # content may be logged, or the record quotes no client

        def clean(text: str) -> str:
            text = redact_forms(redact_webhook_paths(text), forms)
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
                str(key)[:100]: _clean_value(value, clean, forms) for key, value in fields.items()
            }
        if self.emails and record.exc_info and record.exc_info[1] is not None:
            # formatted again even if another handler did: its text shows the messages
            record.exc_text = hidden_traceback(record.exc_info[1])
        exception = _exception_text(record)
        if exception:
            record.exc_text = _bounded(exception, EXCEPTION_LIMIT, clean)
        return True


def _hidden_failures(args: Any) -> Any:
    """A record's ``args`` with each exception as :func:`hidden_message` writes it."""
    if isinstance(args, tuple):
        return tuple(hidden_message(a) if isinstance(a, BaseException) else a for a in args)
    if isinstance(args, dict):
        return {
            k: hidden_message(v) if isinstance(v, BaseException) else v for k, v in args.items()
        }
    return args


def _clean_value(
    value: Any, clean: Callable[[str], str], forms: tuple[str, ...], depth: int = 0
) -> Any:
    """A field's ``value`` cleaned: each string (and key) in it, at any depth, a number that
    reads as a form of a secret ``***``, a value of another type by its text; lists and
    mappings cut to 100 items, 10 levels."""
    if value is None or isinstance(value, bool | int | float):
        return REDACTED if forms and holds_form(str(value), forms) else value
    if depth < 10 and isinstance(value, dict):
        return {
            _bounded(str(key)[:100], 100, clean): _clean_value(item, clean, forms, depth + 1)
            for key, item in list(value.items())[:100]
        }
    if depth < 10 and isinstance(value, list | tuple):
        return [_clean_value(item, clean, forms, depth + 1) for item in value[:100]]
    return _bounded(value if isinstance(value, str) else str(value), FIELD_LIMIT, clean)


def _scrub(value: Any, forms: tuple[str, ...]) -> Any:
    """``value`` (JSON data) with each key and value whose JSON text still holds a form of a
    secret redacted, then replaced by ``***`` if it still does once escaped."""
    if isinstance(value, dict):
        return {_scrub(str(key), forms): _scrub(item, forms) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, forms) for item in value]
    if not holds_form(dumps_json(value, default=str), forms):
        return value
    if isinstance(value, str):
        value = redact_forms(value, forms)
        if not holds_form(dumps_json(value), forms):
            return value
    return REDACTED


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
        line = dumps_json(data, default=str)
        forms: tuple[str, ...] = getattr(record, "secret_forms", ())
        # the filter cleaned every value: only an escape JSON wrote can make a form (the
        # usual line has none, and is not searched again)
        if forms and "\\" in line and holds_form(line, forms):
            # a value only its JSON escaping turned into a form of a secret (or one no filter
            # cleaned): the values that hold one redacted, and if the line still does, no line
            line = dumps_json(_scrub(data, forms), default=str)
            if holds_form(line, forms):
                data = {key: data[key] for key in ("time", "level", "logger")}
                line = dumps_json({**data, "message": f"{REDACTED} (the record held a secret)"})
        return line


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
        # the filter cleaned every value: only an escape written for the line can make a form
        # of a secret (the usual line has none, and is not searched again)
        if "\\" not in line:
            return line
        return redact_forms(line, getattr(record, "secret_forms", ()))


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
    # an SDK's debug lines dump what it sends and receives (a message's text, a client's
    # phone), which no filter can tell from the rest: kept for when content may be logged
    sdk = logging.getLogger(SDK_LOGGERS)
    sdk.setLevel(logging.NOTSET if content_allowed(settings) else max(level, logging.INFO))


class LineSender:
    """A log stream whose lines go to the daemon over ``connection``: an evaluation worker's
    log, which :func:`relay_lines` writes to the daemon's with the daemon's secrets redacted
    (the worker does not know them: :mod:`rulekit.runtime.confined`)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def write(self, text: str) -> int:
        if text:
            with contextlib.suppress(OSError, ValueError):  # the daemon is gone: nobody reads
                self.connection.send_bytes(text.encode("utf-8", "replace"))
        return len(text)

    def flush(self) -> None:
        pass


def relay_lines(connection: Any, secrets: Callable[[], Iterable[str]]) -> None:
    """Write each line a helper process sends (:class:`LineSender`) where the daemon's log
    goes, with every form of the daemon's ``secrets`` redacted, until the helper's end of
    ``connection`` closes. The lines were cleaned by the helper's own filters otherwise
    (content, emails, controls, limits)."""
    try:
        while True:
            try:
                data = connection.recv_bytes()
            except (EOFError, OSError):
                return
            line = redact_forms(data.decode("utf-8", "replace"), folded_forms(tuple(secrets())))
            handler = next(
                (
                    each
                    for each in logging.getLogger(LOGGER).handlers
                    if each.get_name() == _HANDLER and isinstance(each, logging.StreamHandler)
                ),
                None,
            )
            if handler is None:
                sys.stderr.write(line)
                continue
            with contextlib.suppress(Exception), _held(handler):
                handler.stream.write(line)
                handler.flush()
    finally:
        connection.close()


@contextlib.contextmanager
def _held(handler: logging.Handler) -> Iterator[None]:
    handler.acquire()
    try:
        yield
    finally:
        handler.release()


SDK_LOGGERS = f"{LOGGER}.sdk"
"""The parent of the loggers rulekit gives the service SDKs it calls (``rulekit.sdk.slack``):
below ``info`` only when content may be logged, whatever ``logging.level`` says."""


def content_allowed(settings: LoggingSettings) -> bool:
    """Whether message texts and emails may be logged: only with ``logging.content: true``
    (debug level alone does not: it is asked for to see more of what the daemon does, not
    to copy the clients' conversations into the log)."""
    return settings.content


def log(
    logger: logging.Logger,
    level: int,
    message: str,
    *,
    exc_info: bool | BaseException = False,
    personal: PersonalValues | None = None,
    failure: BaseException | None = None,
    **fields: Any,
) -> None:
    """Log ``message`` with structured ``fields`` (JSON keys, or ``key=value`` in text);
    ``personal``: the client's values the record may quote (an action's error quoting what it
    sent), hidden unless content may be logged; ``exc_info``: true for the exception being
    handled, or an exception (its traceback); ``failure``: an exception the line ends with
    (``message: <its message>``), its message hidden unless content may be logged (a store's
    or a worker's error may quote a client's data)."""
    if logger.isEnabledFor(level):
        extra: dict[str, Any] = {"fields": fields}
        if personal:
            extra["personal"] = personal
        if failure is None:
            logger.log(level, message, exc_info=exc_info, extra=extra)
        else:  # an argument, which the filters can tell from the rest of the message
            text = message.replace("%", "%%") + ": %s"
            logger.log(level, text, failure, exc_info=exc_info, extra=extra)


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
