"""Business-hours calendars (``calendars:`` in the config): when a team is open, and business
time (``after: {business: 10m, calendar: support}``).

A calendar is weekly opening hours in a zone, minus holidays::

    calendars:
      support:
        timezone: Europe/Berlin            # default: the config's timezone
        hours:                             # weekday -> list of "HH:MM-HH:MM"
          mon-fri: ["09:00-13:00", "14:00-18:00"]
          sat: ["10:00-14:00"]
        holidays: ["2026-12-24", "2026-12-25..2026-12-26"]

Weekdays left out are closed. A span may cross midnight (``22:00-02:00``: it belongs to the day
it starts on, and a holiday closes the spans that start on it); ``24:00`` ends a day. Times are
wall-clock times of the calendar's zone: across a DST change, ``09:00-18:00`` is still open from
nine to six local time, and business time counts real elapsed time (a night span over the
spring-forward hour is an hour shorter). A time skipped by a DST change is read with the offset
before the change.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator

from rulekit.models import StrictModel

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEARCH_DAYS = 2 * 366
"""How far ahead a calendar looks for an opening (a calendar closed longer is "never open")."""
MAX_SPANS = 48
"""Opening spans a weekday may have (every half hour open and closed): a calendar is
walked day by day, each span of each day, in the evaluation of every event that asks it
(thousands of spans a day took seconds, past an event's CPU budget)."""


def _clock(text: str) -> int:
    """``"HH:MM"`` as minutes after midnight (``24:00`` is 1440)."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{text!r} is not a time: use HH:MM (e.g. 09:30)")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ValueError(f"{text!r} is not a time of day (00:00 to 24:00)")
    return value


def parse_span(text: str) -> tuple[int, int]:
    """``"09:00-13:00"`` as (start, end) minutes; an end at or before the start is the next
    day's (``22:00-02:00``)."""
    start, sep, end = str(text).partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not a span: use HH:MM-HH:MM (e.g. 09:00-17:30)")
    first, last = _clock(start), _clock(end)
    if first == last:
        raise ValueError(f"{text!r} is empty: the start and the end are the same time")
    if first == 24 * 60:
        raise ValueError(f"{text!r} starts at 24:00: start it at 00:00")
    return first, last if last > first else last + 24 * 60


def parse_days(text: str) -> list[int]:
    """``"mon-fri"``, ``"sat"``, ``"sat,sun"`` as weekday numbers (Monday is 0)."""
    days: list[int] = []
    for part in str(text).lower().split(","):
        first, sep, last = part.strip().partition("-")
        if first not in WEEKDAYS or (sep and last not in WEEKDAYS):
            raise ValueError(
                f"{text!r} is not a weekday or range of weekdays ({', '.join(WEEKDAYS)}; "
                "e.g. mon-fri)"
            )
        start = WEEKDAYS.index(first)
        stop = WEEKDAYS.index(last) if sep else start
        days.extend((start + step) % 7 for step in range((stop - start) % 7 + 1))
    return days


def parse_holidays(entries: list[str]) -> list[tuple[date, date]]:
    """``"2026-12-24"`` and ``"2026-12-25..2026-12-26"`` (both ends included) as date ranges."""
    ranges = []
    for entry in entries:
        first, sep, last = str(entry).partition("..")
        try:
            start = date.fromisoformat(first.strip())
            end = date.fromisoformat(last.strip()) if sep else start
        except ValueError:
            raise ValueError(
                f"{entry!r} is not a date or range: use YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
            ) from None
        if end < start:
            raise ValueError(f"{entry!r} ends before it starts")
        ranges.append((start, end))
    return ranges


def check_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown timezone {value!r} (use an IANA name like Europe/Berlin)"
        ) from None
    return value


class CalendarSpec(StrictModel):
    """One calendar as written in the config."""

    timezone: str | None = Field(None, description="IANA zone; default: the config's timezone")
    hours: dict[str, list[str]] = Field(
        default_factory=dict,
        description='weekday or range ("mon-fri") -> spans "HH:MM-HH:MM"; left out: closed',
    )
    holidays: list[str] = Field(
        default_factory=list, description='closed days: "YYYY-MM-DD" or "YYYY-MM-DD..YYYY-MM-DD"'
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else check_zone(value)

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        counts = dict.fromkeys(range(7), 0)
        for days, spans in value.items():
            for day in parse_days(days):
                counts[day] += len(spans)
            for span in spans:
                parse_span(span)
        for day, count in counts.items():
            if count > MAX_SPANS:
                raise ValueError(
                    f"{WEEKDAYS[day]} has {count} opening spans: at most {MAX_SPANS} a day"
                )
        return value

    @field_validator("holidays", mode="before")
    @classmethod
    def _yaml_dates(cls, value: object) -> object:
        # an unquoted 2026-12-24 is a date to YAML (and 2026-12-24 10:00 a time, refused
        # below as not a day): taken as written
        if not isinstance(value, list):
            return value
        return [item.isoformat() if isinstance(item, date) else item for item in value]

    @field_validator("holidays")
    @classmethod
    def _holidays(cls, value: list[str]) -> list[str]:
        parse_holidays(value)
        return value


class Calendar:
    """A compiled calendar: opening hours as intervals of real time."""

    def __init__(self, name: str, spec: CalendarSpec, default_zone: str) -> None:
        self.name = name
        self.zone = ZoneInfo(spec.timezone or default_zone)
        self._spans: dict[int, list[tuple[int, int]]] = {day: [] for day in range(7)}
        for days, spans in spec.hours.items():
            for day in parse_days(days):
                self._spans[day].extend(parse_span(span) for span in spans)
        for day_spans in self._spans.values():
            day_spans.sort()
        # holiday ranges merged and in order, so that a day is looked up in log n: a calendar
        # closed for long with thousands of holidays was searched through all of them for each
        # day it looked at (730 days for a business_hours() that is false)
        merged: list[tuple[date, date]] = []
        for start, end in sorted(parse_holidays(spec.holidays)):
            if merged and start.toordinal() <= merged[-1][1].toordinal() + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self._holiday_starts = [start for start, _ in merged]
        self._holiday_ends = [end for _, end in merged]

    @property
    def has_hours(self) -> bool:
        """Whether any weekday has opening hours (without, the calendar never opens)."""
        return any(self._spans.values())

    def is_holiday(self, day: date) -> bool:
        index = bisect_right(self._holiday_starts, day) - 1
        return index >= 0 and day <= self._holiday_ends[index]

    def _local(self, day: date, minutes: int) -> datetime:
        """The instant (in UTC, so that comparisons and differences are in real time) of a
        wall-clock time of the zone. A time repeated by a DST change is its first occurrence;
        a time skipped by one is read with the offset before the change."""
        naive = datetime.combine(day, time()) + timedelta(minutes=minutes)
        return naive.replace(tzinfo=self.zone).astimezone(UTC)

    def intervals(self, start: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open intervals (merged, in order) that end after ``start``, clipped to start at it;
        within :data:`SEARCH_DAYS`."""
        start = start.astimezone(UTC)
        day = start.astimezone(self.zone).date() - timedelta(days=1)
        pending: tuple[datetime, datetime] | None = None
        for _ in range(SEARCH_DAYS + 2):
            if not self.is_holiday(day):
                for first, last in self._spans[day.weekday()]:
                    begin, end = self._local(day, first), self._local(day, last)
                    if end <= start or end <= begin:
                        continue
                    begin = max(begin, start)
                    if pending is not None and begin <= pending[1]:
                        pending = (pending[0], max(pending[1], end))
                        continue
                    if pending is not None:
                        yield pending
                    pending = (begin, end)
            day += timedelta(days=1)
            # every span of the days after this one starts after this day ends
            if pending is not None and pending[1] <= self._local(day, 0):
                yield pending
                pending = None
        if pending is not None:
            yield pending

    def is_open(self, at: datetime) -> bool:
        """Whether the calendar is open at ``at``."""
        for begin, _end in self.intervals(at):
            return begin <= at
        return False

    def next_open(self, at: datetime) -> datetime | None:
        """``at`` when open then, else when it next opens (in the calendar's zone); None when it
        does not open within :data:`SEARCH_DAYS`."""
        for begin, _end in self.intervals(at):
            return begin.astimezone(self.zone)
        return None

    def add(self, at: datetime, duration: timedelta) -> datetime | None:
        """The instant ``duration`` of open time after ``at`` (10 minutes from Friday 17:55 is
        Monday 09:05 when the weekend is closed); None when it is not reached within
        :data:`SEARCH_DAYS`."""
        left = duration
        for begin, end in self.intervals(at):
            if end - begin >= left:
                return (begin + left).astimezone(self.zone)
            left -= end - begin
        return None


def compile_calendars(specs: dict[str, CalendarSpec], default_zone: str) -> dict[str, Calendar]:
    """The config's calendars, compiled."""
    return {name: Calendar(name, spec, default_zone) for name, spec in specs.items()}
