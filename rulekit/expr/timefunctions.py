"""The time vocabulary of conditions and templates: ``business_hours('support')``,
``next_open('support')`` and the ``datetime(format)`` filter.

The functions read the time the expression is evaluated at (``now``, which the engine passes in;
never the wall clock), so that ``rulekit test`` can simulate time and a timer fired late sees its
own time. Generated condition code passes ``now`` to a global marked :func:`reads_now`; Jinja2
templates pass their context, which holds ``now``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import pass_context

from rulekit.calendars import Calendar
from rulekit.errors import TemplateError, did_you_mean

CALENDAR_FUNCTIONS = ("business_hours", "next_open")
"""Globals whose first argument names a calendar (checked at load time)."""

MAX_FORMAT = 200
"""The longest ``datetime`` format (its output grows with it)."""


def reads_now(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a global as reading ``now`` from its first argument (a mapping with ``"now"``:
    a Jinja2 context in templates, ``{"now": now}`` in generated condition code)."""
    marked = pass_context(function)
    marked.rulekit_reads_now = True  # type: ignore[attr-defined]
    return marked


def is_reading_now(function: Any) -> bool:
    return bool(getattr(function, "rulekit_reads_now", False))


def _now(context: Mapping[str, Any]) -> datetime:
    now = context.get("now") if hasattr(context, "get") else None
    if not isinstance(now, datetime):
        raise TemplateError("the time is not known here")
    return now


def time_globals(calendars: Mapping[str, Calendar]) -> dict[str, Callable[..., Any]]:
    """``business_hours`` and ``next_open`` over the config's calendars."""

    def calendar(name: Any) -> Calendar:
        found = calendars.get(name) if isinstance(name, str) else None
        if found is None:
            hint = did_you_mean(str(name), list(calendars))
            known = ", ".join(calendars) or "none"
            raise TemplateError(f"unknown calendar {name!r}{hint} (configured: {known})")
        return found

    @reads_now
    def business_hours(context: Mapping[str, Any], name: str) -> bool:
        """Whether the calendar is open now."""
        return calendar(name).is_open(_now(context))

    @reads_now
    def next_open(context: Mapping[str, Any], name: str) -> datetime | None:
        """Now when the calendar is open, else when it next opens (in its zone)."""
        return calendar(name).next_open(_now(context))

    return {"business_hours": business_hours, "next_open": next_open}


def datetime_filter(zone: ZoneInfo) -> Callable[..., str]:
    """The ``datetime(format)`` filter: strftime, in the value's calendar zone (``next_open``
    returns times in its calendar's zone; ``now`` is in the config's) — any other time (an
    event's, in UTC) is shown in the config's zone ``zone``."""

    def format_datetime(value: Any, format: str = "%Y-%m-%d %H:%M") -> str:
        if value is None:
            return ""
        if not isinstance(format, str) or len(format) > MAX_FORMAT:
            raise TemplateError(
                f"datetime: the format is a text of at most {MAX_FORMAT} characters"
            )
        if isinstance(value, datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            if not isinstance(value.tzinfo, ZoneInfo) or value.tzinfo.key == "UTC":
                value = value.astimezone(zone)
        elif not isinstance(value, date):
            raise TemplateError(f"datetime: needs a date or time, not {type(value).__name__}")
        try:
            return str(value.strftime(format))
        except ValueError as exc:
            raise TemplateError(f"datetime: {exc}") from None

    return format_datetime


def unknown_calendars(node: Any, calendars: Mapping[str, Calendar]) -> list[str]:
    """Problems with calendar names written as constants in an expression's node tree
    (``business_hours('suport')``), with a did-you-mean."""
    from jinja2 import nodes

    problems = []
    calls = [node] if isinstance(node, nodes.Call) else []
    for call in [*calls, *node.find_all(nodes.Call)]:
        target = call.node
        if not (isinstance(target, nodes.Name) and target.name in CALENDAR_FUNCTIONS):
            continue
        if len(call.args) != 1 or call.kwargs:
            problems.append(f"{target.name}() takes one argument, a calendar's name")
            continue
        argument = call.args[0]
        if isinstance(argument, nodes.Const) and argument.value not in calendars:
            hint = did_you_mean(str(argument.value), list(calendars))
            known = ", ".join(calendars) or "none"
            problems.append(f"unknown calendar {argument.value!r}{hint} (configured: {known})")
    return problems
