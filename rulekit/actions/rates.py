"""Rate limits as admins write them (``10/s``, ``60/m``, ``500/h``, ``20/10s``), and as services
state them (``Retry-After``)."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from rulekit.actions.pacing import Limit
from rulekit.models import parse_duration

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_rate(value: object) -> Limit:
    """``<count>/<unit>`` (``s``, ``m``, ``h``, ``d``) or ``<count>/<duration>`` as a
    :class:`~rulekit.actions.pacing.Limit`."""
    if isinstance(value, Limit):
        return value
    count_text, slash, period_text = str(value).strip().partition("/")
    if not slash or not count_text.strip().isdigit():
        raise ValueError(f"{value!r} is not a rate: write e.g. 10/s, 60/m or 20/10s")
    count = int(count_text)
    period_text = period_text.strip()
    period = _UNITS.get(period_text)
    if period is None:
        try:
            period = parse_duration(period_text).total_seconds()
        except ValueError:
            raise ValueError(f"{value!r} is not a rate: write e.g. 10/s, 60/m or 20/10s") from None
    if count < 1:
        raise ValueError("a rate needs at least 1 call per period")
    return Limit(count, period)


def _show(limit: Limit) -> str:
    return f"{limit.count}/{limit.period:g}s"


Rate = Annotated[
    Limit,
    BeforeValidator(parse_rate),
    PlainSerializer(_show, return_type=str),
    WithJsonSchema({"type": "string", "examples": ["10/s", "60/m", "20/10s"]}),
]
"""A pydantic field type reading :func:`parse_rate`'s format."""


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks for, or None: delay-seconds (``120``), or an HTTP
    date (``Wed, 21 Oct 2026 07:28:00 GMT``, a date without a zone read as UTC) counted from
    ``now`` (Unix seconds). A time already past asks for 0."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None
