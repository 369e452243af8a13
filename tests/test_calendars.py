"""Business-hours calendars: split shifts, spans over midnight, holidays, DST, business time."""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError
from scaffold import write

from rulekit.calendars import Calendar, CalendarSpec
from rulekit.config import load_config
from rulekit.errors import ValidationErrors
from rulekit.plugins import load_plugins

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def calendar(zone: str = "Europe/Berlin", **spec: object) -> Calendar:
    return Calendar("support", CalendarSpec.model_validate(spec), zone)


SUPPORT = calendar(
    hours={"mon-fri": ["09:00-13:00", "14:00-18:00"], "sat": ["10:00-14:00"]},
    holidays=["2026-12-24", "2026-12-25..2026-12-26", "2027-01-01"],
)
WEEKDAYS_ONLY = calendar(hours={"mon-fri": ["09:00-13:00", "14:00-18:00"]})
HALF_HOURS = [
    f"{hour:02d}:{start}-{hour:02d}:{start[0]}9" for hour in range(24) for start in ("00", "30")
]


def berlin(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (berlin(2026, 12, 7, 8, 59), False),
        (berlin(2026, 12, 7, 9, 0), True),  # a span includes its start
        (berlin(2026, 12, 7, 12, 59), True),
        (berlin(2026, 12, 7, 13, 0), False),  # and excludes its end: the lunch break
        (berlin(2026, 12, 7, 14, 0), True),
        (berlin(2026, 12, 12, 11, 0), True),  # Saturday
        (berlin(2026, 12, 13, 11, 0), False),  # Sunday is left out: closed
        (berlin(2026, 12, 24, 11, 0), False),  # a holiday
        (berlin(2026, 12, 26, 11, 0), False),  # the end of a holiday range is included
    ],
)
def test_split_shifts_weekdays_and_holidays(at: datetime, is_open: bool) -> None:
    assert SUPPORT.is_open(at) is is_open


def test_next_open_skips_breaks_weekends_and_holidays() -> None:
    assert SUPPORT.next_open(berlin(2026, 12, 7, 13, 30)) == berlin(2026, 12, 7, 14, 0)
    assert SUPPORT.next_open(berlin(2026, 12, 7, 10, 0)) == berlin(2026, 12, 7, 10, 0)
    assert SUPPORT.next_open(berlin(2026, 12, 23, 19, 0)) == berlin(2026, 12, 28, 9, 0)
    assert WEEKDAYS_ONLY.next_open(berlin(2026, 12, 4, 18, 0)) == berlin(2026, 12, 7, 9, 0)
    assert SUPPORT.next_open(berlin(2026, 12, 7, 20, 0)).tzinfo == BERLIN  # type: ignore[union-attr]


def test_business_time_counts_open_hours_only() -> None:
    friday = berlin(2026, 12, 4, 17, 55)
    ten = timedelta(minutes=10)
    assert WEEKDAYS_ONLY.add(friday, ten) == berlin(2026, 12, 7, 9, 5)  # the example
    assert SUPPORT.add(friday, ten) == berlin(2026, 12, 5, 10, 5)  # Saturday is open
    assert SUPPORT.add(berlin(2026, 12, 7, 12, 50), ten) == berlin(2026, 12, 7, 13, 0)
    fifteen = timedelta(minutes=15)
    assert SUPPORT.add(berlin(2026, 12, 7, 12, 50), fifteen) == berlin(2026, 12, 7, 14, 5)
    assert SUPPORT.add(berlin(2026, 12, 7, 7, 0), ten) == berlin(2026, 12, 7, 9, 10)
    # eight open hours from Monday nine is Monday six; one minute more is Tuesday
    assert WEEKDAYS_ONLY.add(berlin(2026, 12, 7, 9), timedelta(hours=8)) == berlin(2026, 12, 7, 18)
    assert WEEKDAYS_ONLY.add(berlin(2026, 12, 7, 9), timedelta(hours=8, minutes=1)) == berlin(
        2026, 12, 8, 9, 1
    )


def test_a_span_over_midnight_belongs_to_the_day_it_starts() -> None:
    nights = calendar(hours={"fri": ["22:00-02:00"]})
    assert nights.is_open(berlin(2026, 12, 4, 23, 0))
    assert nights.is_open(berlin(2026, 12, 5, 1, 59))  # Saturday night, Friday's span
    assert not nights.is_open(berlin(2026, 12, 5, 2, 0))
    assert not nights.is_open(berlin(2026, 12, 5, 23, 0))  # Saturday is closed
    assert nights.add(berlin(2026, 12, 5, 1, 0), timedelta(hours=2)) == berlin(2026, 12, 11, 23)


def test_a_day_can_be_open_around_the_clock() -> None:
    always = calendar(hours={"mon-sun": ["00:00-24:00"]})
    start = berlin(2026, 12, 7, 23, 30)
    assert always.add(start, timedelta(hours=1)) == berlin(2026, 12, 8, 0, 30)
    assert always.is_open(berlin(2026, 12, 8, 0, 0))


def test_opening_hours_are_local_times_across_dst_in_berlin() -> None:
    # Europe/Berlin changes to summer time on 2027-03-28 and back on 2026-10-25
    monday_after = SUPPORT.next_open(berlin(2027, 3, 27, 19, 0))
    assert monday_after == datetime(2027, 3, 29, 9, 0, tzinfo=BERLIN)
    assert monday_after.utcoffset() == timedelta(hours=2)  # type: ignore[union-attr]
    # Friday 17:55 winter time + 10 business minutes, Saturday open: no DST in between
    before = datetime(2026, 10, 23, 17, 55, tzinfo=BERLIN)
    assert SUPPORT.add(before, timedelta(minutes=10)) == berlin(2026, 10, 24, 10, 5)


def test_business_time_is_real_elapsed_time_across_dst_in_new_york() -> None:
    # America/New_York skips 02:00-03:00 on 2026-03-08: a night span is an hour shorter
    nights = calendar("America/New_York", hours={"sat": ["22:00-04:00"]})
    start = datetime(2026, 3, 7, 22, 0, tzinfo=NEW_YORK)
    end = nights.add(start, timedelta(hours=5))
    assert end == datetime(2026, 3, 8, 4, 0, tzinfo=NEW_YORK)
    assert nights.add(start, timedelta(hours=5, minutes=1)) == datetime(
        2026, 3, 14, 22, 1, tzinfo=NEW_YORK
    )
    # and on 2026-11-01 01:00-02:00 happens twice: that night span is an hour longer
    autumn = calendar("America/New_York", hours={"sat": ["22:00-04:00"]})
    start = datetime(2026, 10, 31, 22, 0, tzinfo=NEW_YORK)
    assert autumn.add(start, timedelta(hours=7)) == datetime(2026, 11, 1, 4, 0, tzinfo=NEW_YORK)


def test_a_calendar_never_open_has_no_next_opening() -> None:
    closed = calendar(hours={})
    assert closed.next_open(berlin(2026, 12, 7, 9)) is None
    assert closed.add(berlin(2026, 12, 7, 9), timedelta(minutes=1)) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"hours": {"mon-fr": ["09:00-17:00"]}}, "not a weekday or range"),
        ({"hours": {"mon": ["9-17"]}}, "not a time"),
        ({"hours": {"mon": ["09:00-09:00"]}}, "empty"),
        ({"hours": {"mon": ["09:00-25:00"]}}, "not a time of day"),
        ({"holidays": ["2026-12-32"]}, "not a date or range"),
        ({"holidays": ["2026-12-26..2026-12-25"]}, "ends before it starts"),
        ({"timezone": "Europe/Berln"}, "unknown timezone"),
        # each span of each day is walked in every evaluation that asks the calendar:
        # thousands of them took seconds an event
        ({"hours": {"mon-sun": HALF_HOURS, "sun": ["23:40-23:50"]}}, "sun has 49 opening spans"),
        ({"hours": {"mon": ["09:00-10:00"] * 49}}, "mon has 49 opening spans: at most 48 a day"),
    ],
)
def test_bad_calendars_are_refused_with_a_reason(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CalendarSpec.model_validate(spec)


def test_a_day_may_be_open_every_half_hour() -> None:
    cal = calendar(hours={"mon-sun": HALF_HOURS})
    assert cal.add(berlin(2026, 12, 7, 9, 5), timedelta(minutes=10)) == berlin(2026, 12, 7, 9, 36)


def test_holidays_overlapping_adjacent_and_unordered_close_exactly_their_days() -> None:
    weekdays = {"mon-sun": ["09:00-17:00"]}
    holidays = ["2026-12-28..2026-12-31", "2026-12-20", "2026-12-22..2026-12-24", "2026-12-23"]
    cal = calendar(hours=weekdays, holidays=holidays)
    days = [date(2026, 12, 19) + timedelta(days=n) for n in range(15)]
    assert [str(day)[5:] for day in days if cal.is_holiday(day)] == [
        "12-20",
        "12-22",
        "12-23",
        "12-24",
        "12-28",
        "12-29",
        "12-30",
        "12-31",
    ]
    assert cal.next_open(berlin(2026, 12, 28, 10)) == berlin(2027, 1, 1, 9)


def _cpu_of_closed_calendar(holidays: list[str]) -> float:
    """CPU time of looking for an opening of a calendar open on weekdays whose every day of
    the next two years is a holiday (listed one by one, latest first)."""
    cal = calendar(hours={"mon-fri": ["09:00-17:00"]}, holidays=holidays)
    start = time.thread_time()
    assert cal.next_open(berlin(2026, 1, 1, 10)) is None
    assert not cal.is_open(berlin(2026, 1, 1, 10))
    return time.thread_time() - start


def test_thousands_of_holidays_cost_about_what_one_range_does() -> None:
    """Each day looked at was compared with every holiday: a calendar closed for long with
    20,000 holidays listed took most of a second per business_hours(), in every evaluation
    that called it. The same closure as one range costs about the same (CPU time of the same
    run, compared)."""
    days = [str(date(2026, 1, 1) + timedelta(days=n)) for n in range(20_000)]
    one_range = min(_cpu_of_closed_calendar([f"{days[0]}..{days[-1]}"]) for _ in range(3))
    listed = min(_cpu_of_closed_calendar(days[::-1]) for _ in range(3))
    assert listed < 10 * one_range + 0.01


def test_holidays_written_as_yaml_dates_are_days_and_times_are_refused(tmp_path: Path) -> None:
    """An unquoted ``2026-12-24`` is a date to YAML: the config was refused with "Input should
    be a valid string" for a day written as every YAML file writes one."""
    plugins = load_plugins(entry_points=False)
    config = load_config(
        write(
            tmp_path / "rulekit.yaml",
            """
            timezone: Europe/Berlin
            calendars:
              support:
                hours: {mon-sun: ["09:00-17:00"]}
                holidays: [2026-12-24, "2026-12-25..2026-12-26", 2027-01-01]
            """,
        ),
        plugins,
        {},
    )
    support = config.calendars["support"]
    assert [support.is_holiday(date(2026, 12, day)) for day in (23, 24, 25, 26, 27)] == [
        False,
        True,
        True,
        True,
        False,
    ]
    assert support.is_holiday(date(2027, 1, 1))
    with pytest.raises(ValidationErrors) as caught:
        load_config(
            write(
                tmp_path / "rulekit.yaml",
                """
                calendars:
                  support:
                    holidays: [2026-12-24 10:00:00]
                """,
            ),
            plugins,
            {},
        )
    assert [str(error) for error in caught.value.errors] == [
        f"{tmp_path / 'rulekit.yaml'}:3: calendars.support.holidays: '2026-12-24T10:00:00' is "
        "not a date or range: use YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
    ]
