"""The daemon's logs: text or JSON lines, with webhook secrets redacted everywhere.

Webhook URLs carry a secret (``/webhooks/<channel>/<secret>``). :class:`RedactSecrets` is a
filter on every handler the daemon installs, so no record leaves with one: not ours, not
uvicorn's (whose access log is replaced by :func:`access_line`, written with the path already
redacted). Message texts and emails are logged only when ``logging.content`` is true or the
level is ``debug`` (see :func:`content_allowed`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from rulekit.config import LoggingSettings

_WEBHOOK_PATH = re.compile(r"(/webhooks/[^/\s?#\"']+/)[^/\s?#\"']+")
_EMAIL = re.compile(r"[^\s/:@\"'<>=,]+@[^\s/:@\"'<>=,]+\.[A-Za-z]{2,}")

LOGGER = "rulekit"


def redact(text: str) -> str:
    """``text`` with the secret of every webhook path replaced by ``***``."""
    return _WEBHOOK_PATH.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message (arguments applied) without webhook secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class RedactEmails(logging.Filter):
    """Masks email addresses (``<email>``) in messages and fields: event ids and errors may
    carry one (an ``assigned`` event's id names the agent). Installed unless
    ``logging.content`` or debug level allows personal data in the logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _EMAIL.sub("<email>", message)
        if masked != message:
            record.msg, record.args = masked, None
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                key: _EMAIL.sub("<email>", value) if isinstance(value, str) else value
                for key, value in fields.items()
            }
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's ``fields``."""

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
        if record.exc_info:
            data["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger: message key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict) and fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return redact(line)


def configure_logging(settings: LoggingSettings, stream: Any = None) -> None:
    """Send rulekit's and uvicorn's records to ``stream`` (stderr) in the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(RedactSecrets())
    if not content_allowed(settings):
        handler.addFilter(RedactEmails())
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
    logger: logging.Logger, level: int, message: str, *, exc_info: bool = False, **fields: Any
) -> None:
    """Log ``message`` with structured ``fields`` (JSON keys, or ``key=value`` in text)."""
    if logger.isEnabledFor(level):
        logger.log(level, message, exc_info=exc_info, extra={"fields": fields})


def access_line(method: str, path: str, status: int, seconds: float, client: str | None) -> None:
    """One access-log record, with the webhook secret already redacted from ``path``."""
    log(
        logging.getLogger(f"{LOGGER}.access"),
        logging.INFO,
        f"{method} {redact(path)} {status}",
        ms=round(seconds * 1000, 1),
        client=client,
    )
