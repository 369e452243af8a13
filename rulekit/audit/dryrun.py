"""``rulekit test`` on inputs: which rules match each event and exactly what they would do."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rulekit import sources, yamlsource
from rulekit.channels import body
from rulekit.engine.engine import Plan
from rulekit.errors import ChannelError, RulekitError
from rulekit.event import Event
from rulekit.rules.spec import format_duration
from rulekit.runtime.pipeline import ClockError, Pipeline
from rulekit.safetext import text_lines
from rulekit.team import describe_seen
from rulekit.validation import dotted

MAX_INPUT_BYTES = 16 * 1024 * 1024


class InputError(RulekitError):
    """An input file is unreadable or malformed."""


@dataclass
class InputResult:
    """What one input produced: events with their plans, or an error."""

    input: str
    error: str | None = None
    events: list[tuple[Event, Plan]] = field(default_factory=list)


def read_bytes(path: Path) -> bytes:
    try:
        return sources.read_file(path, MAX_INPUT_BYTES)
    except sources.FileTooLarge:
        raise InputError(f"{path}: over {MAX_INPUT_BYTES} bytes") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None


def parse_events(data: Any, source: str) -> list[Event]:
    """Normalized events from decoded JSON/YAML: an object or a list of objects."""
    items = data if isinstance(data, list) else [data]
    events = []
    for index, item in enumerate(items):
        where = source if len(items) == 1 else f"{source}[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"{where}: an event is a mapping with at least channel and event")
        try:
            events.append(Event.model_validate(item))
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field_path = dotted(tuple(first["loc"]))
            raise InputError(f"{where}: {field_path}: {first['msg']}") from None
    return events


def decode(data: bytes, path: Path) -> Any:
    """JSON or YAML, by what the bytes look like (YAML is a superset; JSON errors are clearer)."""
    if path.suffix == ".json":  # read by the same rules as a webhook body
        try:
            return body.load(data)
        except body.BodyError as exc:
            raise InputError(
                f"{path}: invalid JSON: {str(exc).replace('the body', 'the file')}"
            ) from None
    try:
        return yamlsource.load(data)
    except yamlsource.YamlSyntaxError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise InputError(f"{where}: invalid YAML: {exc.message}") from None


def run_input(
    pipeline: Pipeline, path: Path, channel: str | None, now: datetime | None
) -> InputResult:
    """Process one input file; errors are recorded, never raised."""
    result = InputResult(str(path))
    try:
        data = read_bytes(path)
        if channel is not None:
            outcome = pipeline.raw(channel, data, now=now)
        else:
            outcome = pipeline.events(parse_events(decode(data, path), str(path)), now=now)
        result.events = outcome.events
    except (InputError, ChannelError, ClockError) as exc:
        result.error = str(exc) if isinstance(exc, InputError) else f"{path}: {exc}"
    return result


# -- output ------------------------------------------------------------------------------------


def as_json(pipeline: Pipeline, results: list[InputResult]) -> dict[str, Any]:
    """The ``--format json`` document."""
    out = []
    for result in results:
        events = []
        for event, plan in result.events:
            actions = []
            for planned in plan:
                item = planned.as_dict()
                description, problem = pipeline.describe(event, planned)
                item["description"] = description
                if problem:
                    item["would_fail"] = problem
                actions.append(item)
            item = {
                "event": event.public(),
                "rules": [trace.as_dict() for trace in plan.rules],
                "actions": actions,
                "errors": plan.errors,
            }
            if plan.errors_omitted:
                item["errors_omitted"] = plan.errors_omitted
            if plan.timers or plan.cancels:
                item["timers"] = [t.as_dict() for t in plan.timers]
                item["cancels"] = [c.as_dict() for c in plan.cancels]
            if plan.firing is not None:
                item["timer"] = plan.firing.as_dict()
            if plan.team:
                item["team"] = plan.team
            events.append(item)
        out.append({"input": result.input, "error": result.error, "events": events})
    return {"results": out}


def as_text(pipeline: Pipeline, results: list[InputResult], *, color: bool = False) -> str:
    """Output for people: per event, matched rules, why others did not, every action."""
    lines: list[str] = []
    for result in results:
        lines.append(f"── {result.input}")
        if result.error:
            lines.append(f"   error: {result.error}")
            continue
        if not result.events:
            lines.append("   no events (nothing new in this input)")
        for event, plan in result.events:
            lines.extend(_event_lines(pipeline, event, plan))
        lines.append("")
    return text_lines(lines).rstrip("\n") + "\n"


def run_until(pipeline: Pipeline, until: timedelta) -> InputResult:
    """Run the clock ``until`` past the last input (``--until``), firing the timers due."""
    start = pipeline.clock or datetime.now(pipeline.config.timezone)
    result = InputResult(f"(clock advanced {format_duration(until)})")
    try:
        result.events = pipeline.advance(start + until).events
    except ClockError as exc:
        result.error = f"--until: {exc}"
    return result


def _timer_lines(pipeline: Pipeline, event: Event, plan: Plan) -> list[str]:
    zone = pipeline.config.timezone
    firing = plan.firing
    assert firing is not None
    lines = [
        f"   timer of {firing.rule!r} due {firing.due.astimezone(zone):%Y-%m-%d %H:%M} "
        f"(set by event {event.id}): {firing.outcome}"
        + (f" ({firing.reason})" if firing.reason else "")
    ]
    for trace in plan.rules:
        for condition in trace.conditions:
            state = "error" if condition.error else str(condition.result).lower()
            lines.append(f"         unless {condition.source}  →  {state}")
    return lines + _team_lines(plan.team)


def _event_lines(pipeline: Pipeline, event: Event, plan: Plan) -> list[str]:
    if plan.firing is not None:
        return _timer_lines(pipeline, event, plan) + _plan_lines(pipeline, event, plan)
    who = event.client.name or event.client.display_name or event.client.id or "unknown client"
    flags = []
    if event.recovered:
        flags.append("recovered")
    if event.origin != "channel":
        flags.append(f"origin {event.origin}")
    suffix = f" [{', '.join(flags)}]" if flags else ""
    lines = [f"   event {event.event} on {event.channel} from {who}{suffix} (id {event.id})"]
    if event.message.text is not None:
        lines.append(f"     message ({event.message.author or '?'}): {_clip(event.message.text)}")
    if not plan.rules:
        lines.append("     no rule listens to this event")
    for trace in plan.rules:
        mark = "✓" if trace.matched else "✗"
        lines.append(f"     {mark} {trace.name}: {trace.reason}")
        for condition in trace.conditions:
            if not condition.evaluated:
                state = "not evaluated"
            elif condition.error:
                state = f"error: {condition.error}"
            else:
                state = str(condition.result).lower()
            lines.append(f"         {condition.source}  →  {state}")
    for cancel in plan.cancels:
        lines.append(f"     ⏱ cancels a pending timer of {cancel.rule!r}")
    return lines + _team_lines(plan.team) + _plan_lines(pipeline, event, plan)


def _team_lines(seen: dict[str, Any] | None) -> list[str]:
    """What the rules read of ``team``, as the trace keeps it."""
    return [f"     team: {line}" for line in describe_seen(seen or {})] if seen else []


def _plan_lines(pipeline: Pipeline, event: Event, plan: Plan) -> list[str]:
    lines = []
    for planned in plan:
        description, problem = pipeline.describe(event, planned)
        lines.append(f"     → {planned.action} ({planned.rule}): {description}")
        if planned.skipped:
            lines.append(f"         skipped: {planned.skipped}")
        if problem:
            lines.append(f"         would fail: {problem}")
    for error in plan.errors:
        lines.append(f"     ! {error}")
    if plan.errors_omitted:
        lines.append(f"     ! … and {plan.errors_omitted} more error(s), not kept")
    return lines


def _clip(text: str, width: int = 100) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
