"""How the SQL stores write values: times as ISO-8601 UTC text, JSON as compact text."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, overload

from rulekit.event import Event
from rulekit.store.records import utc

try:  # a dependency; without it (an environment not reinstalled yet) traces are written by json
    import msgspec

    _encode: Any = msgspec.json.Encoder().encode
except ImportError:  # pragma: no cover
    _encode = None


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


def event_json(event: Event) -> str:
    """An event as stored: the JSON of :meth:`Event.public() <rulekit.event.Event.public>`
    (no raw payload), written by pydantic's own encoder in one pass, three times as fast as
    :func:`to_json` of the dumped data; the same JSON, and for an ordinary event the same
    text."""
    return event.model_dump_json(exclude=_NOT_STORED)


_NOT_STORED = {"raw"}


def trace_json(value: Any) -> str:
    """A trace as stored: the text :func:`to_json` writes, made by msgspec's encoder (6 to 8
    times as fast as ``json.dumps`` on traces, which the daemon writes for every event). What
    msgspec refuses (a lone surrogate, keys that are not text or numbers) goes through
    :func:`to_json`. Traces hold no NaN (parameters are dumped as JSON data, NaN as null).
    An :class:`EncodedTrace` is that text already."""
    if isinstance(value, EncodedTrace):
        return value.text
    text = fast_json(value)
    return to_json(value) if text is None else text


def fast_json(value: Any) -> str | None:
    """``value`` as :func:`trace_json` writes it when msgspec can (None when it cannot, or is
    not installed): parts of a trace encoded apart join into the text of the whole."""
    if _encode is None:  # pragma: no cover
        return None
    try:
        return str(_encode(value), "utf-8")
    except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
        return None


class EncodedTrace(Mapping[str, Any]):
    """A trace already encoded as :func:`trace_json` writes it (``text``), and the names of the
    rules that fired (``matched``). Where a trace is read it is a mapping (decoded on first
    read); the stores write its text as it is. It travels (pickled) as its text."""

    __slots__ = ("_data", "matched", "text")

    def __init__(self, text: str, matched: Sequence[str]) -> None:
        self.text = text
        self.matched = matched
        self._data: dict[str, Any] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (EncodedTrace, (self.text, self.matched))

    def _decoded(self) -> dict[str, Any]:
        if self._data is None:
            self._data = json.loads(self.text)
        return self._data

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"EncodedTrace({self.text!r})"


def from_json(value: str | None) -> Any:
    """Stored JSON back."""
    return None if value is None else json.loads(value)
