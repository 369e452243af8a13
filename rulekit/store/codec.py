"""How the SQL stores write values: times as ISO-8601 UTC text, JSON as compact text."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, overload

from rulekit.store.records import utc


def ts(value: datetime | None) -> str | None:
    """A time as stored: ISO-8601 UTC with microseconds, so text order is time order."""
    return None if value is None else utc(value).isoformat(timespec="microseconds")


@overload
def from_ts(value: str) -> datetime: ...
@overload
def from_ts(value: str | None) -> datetime | None: ...
def from_ts(value: str | None) -> datetime | None:
    """A stored time back (timezone-aware)."""
    return None if value is None else datetime.fromisoformat(value)


def to_json(value: Any) -> str:
    """JSON as stored: compact, UTF-8, no NaN."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def from_json(value: str | None) -> Any:
    """Stored JSON back."""
    return None if value is None else json.loads(value)
