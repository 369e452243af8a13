"""Rule test suites: sample events with expected outcomes, for admins' CI.

A suite is a YAML file with a top-level ``tests:`` list::

    tests:
      - name: an anonymous chat gets an autoreply
        channel: online-chat          # inputs below are raw payloads of this channel
        now: 2025-03-14T10:00:00Z     # optional: the time conditions see
        inputs:
          - file: samples/chat_started_anonymous.json   # relative to the suite file
          - payload: {eventName: chatFragment, ...}     # inline raw payload
          - event: {channel: online-chat, event: created, client: {country: Germany}}  # normalized
        expect:
          - rule: Greet new chats
            action: autoreply
            params: {text: "Hi there! An agent will answer shortly."}   # a subset of params
        expect_absent:
          - action: telegram
        online: [ann@example.com]     # optional: who is online in the console (default: all)

Inputs of one test share one in-memory state, in order; each test starts fresh. An
expectation's ``would_fail`` (true, false, or words the reason must contain) checks what a dry
run says about the action, e.g. an ``assign`` that finds nobody of the ``online`` team.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    Field,
    StrictBool,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from rulekit import yamlsource
from rulekit.audit.dryrun import InputError, decode, parse_events, read_bytes
from rulekit.engine.engine import Engine
from rulekit.errors import ChannelError, did_you_mean
from rulekit.models import Duration, StrictModel
from rulekit.runtime.pipeline import ClockError, Outcome, Pipeline
from rulekit.safetext import text_lines
from rulekit.store.memory import MemoryStore
from rulekit.validation import dotted, pydantic_errors

INPUT_KINDS = ("file", "payload", "event", "advance", "at")
"""What an item of ``inputs:`` is: exactly one of them."""
Time = Annotated[
    AwareDatetime,
    WithJsonSchema(
        {"type": "string", "format": "date-time", "pattern": r"(Z|z|[+-]\d\d(:?\d\d)?)$"}
    ),
]
"""A time with its UTC offset (``2026-12-07T09:05:00+01:00``)."""


class SuiteInput(StrictModel):
    """One item of a test's ``inputs:``: an event (a file, a raw payload, a normalized event)
    or a move of the simulated clock (``advance: 5m``, ``at: <ISO time>``)."""

    model_config = {
        "json_schema_extra": {
            "oneOf": [
                {"required": [kind], "properties": {kind: {"not": {"type": "null"}}}}
                for kind in INPUT_KINDS
            ]
        }
    }

    file: str | None = Field(None, min_length=1)
    payload: Any = None
    event: dict[str, Any] | None = None
    advance: Duration | None = None
    at: Time | None = None
    channel: str | None = None

    @model_validator(mode="after")
    def _one(self) -> SuiteInput:
        given = [k for k in INPUT_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("an input has exactly one of file, payload, event, advance or at")
        return self


class Expectation(StrictModel):
    rule: str | None = Field(None, description="The rule that planned the action.")
    action: str | None = Field(None, description="The action's name.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="A subset of the rendered parameters."
    )
    at: Time | None = Field(
        None, description="For an action of a timed rule: the simulated time its timer fired."
    )
    """For an action of a timed rule: the simulated time its timer fired."""
    would_fail: StrictBool | str | None = Field(
        None,
        description="Whether the action would fail, or words its reason contains, as the dry "
        "run says (e.g. an assign that finds nobody of the online team).",
    )
    """Whether the action would fail (or words its reason contains), as a dry run tells."""

    def matches(self, actual: dict[str, Any]) -> bool:
        if self.rule is not None and actual["rule"] != self.rule:
            return False
        if self.would_fail is not None and not _fails_as(self.would_fail, actual.get("would_fail")):
            return False
        if self.action is not None and actual["action"] != self.action:
            return False
        if self.at is not None and not _same_instant(actual.get("at"), self.at):
            return False
        return all(actual["params"].get(k) == v for k, v in self.params.items())

    def describe(self) -> str:
        parts = [f"{k}={v!r}" for k, v in (("rule", self.rule), ("action", self.action)) if v]
        parts += [f"params.{k}={v!r}" for k, v in self.params.items()]
        if self.at is not None:
            parts.append(f"at={self.at.isoformat()}")
        if self.would_fail is not None:
            parts.append(f"would_fail={self.would_fail!r}")
        return ", ".join(parts) or "any action"


def _same_instant(actual: object, expected: datetime) -> bool:
    """Whether ``actual`` is the instant ``expected`` is (in UTC: a time of the hour the
    clocks go back is never equal to one of another zone, as Python compares them)."""
    return isinstance(actual, datetime) and actual.astimezone(UTC) == expected.astimezone(UTC)


def _fails_as(wanted: bool | str, problem: str | None) -> bool:
    if wanted is True or wanted is False:
        return bool(problem) is wanted
    return problem is not None and wanted in problem


class SuiteTest(StrictModel):
    model_config = {
        "json_schema_extra": {
            "anyOf": [
                {"required": ["expect"], "properties": {"expect": {"minItems": 1}}},
                {"required": ["expect_absent"], "properties": {"expect_absent": {"minItems": 1}}},
                {"required": ["exact"], "properties": {"exact": {"const": True}}},
            ]
        }
    }

    name: str
    channel: str | None = Field(None, description="Inputs are raw payloads of this channel.")
    now: Time | None = Field(
        None, description="Start the simulated clock then (a time with its UTC offset)."
    )
    inputs: list[SuiteInput] = Field(min_length=1)
    expect: list[Expectation] = Field(
        default_factory=list, description="Actions that must be planned."
    )
    expect_absent: list[Expectation] = Field(
        default_factory=list, description="Actions that must not be planned."
    )
    exact: bool = Field(False, description="Also fail on actions `expect` does not list.")
    online: list[str] | None = Field(
        None,
        description="The agents (emails) online in the console, as team.online and assign's "
        "only_online see them; everyone with access to the channel when left out.",
    )
    """The agents (emails) online in the console; everyone when left out."""

    @model_validator(mode="after")
    def _checks_something(self) -> SuiteTest:
        # a test with nothing to check passes whatever the rules do
        if not self.expect and not self.expect_absent and not self.exact:
            raise ValueError(
                "the test checks nothing: give it expect, expect_absent or exact: true "
                "(exact with no expect: no action at all)"
            )
        return self


class Suite(StrictModel):
    tests: list[SuiteTest] = Field(json_schema_extra={"minItems": 1})  # (said by run_suite)
    format: Literal[1] = 1


def suite_schema() -> dict[str, Any]:
    """The JSON Schema of a test suite file (``rulekit schema`` offers it beside rules)."""
    return Suite.model_json_schema(ref_template="#/$defs/{model}")


@dataclass
class TestResult:
    name: str
    failures: list[str] = field(default_factory=list)
    actual: list[dict[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class SuiteResult:
    path: str
    error: str | None = None
    tests: list[TestResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and all(t.passed for t in self.tests)


def load_suite(path: Path) -> tuple[Suite, Any]:
    """The suite in ``path`` and the YAML data it was read from (with line numbers)."""
    data = yamlsource.load(read_bytes(path))
    try:
        return Suite.model_validate(data), data
    except ValidationError as exc:
        (line, where), message = next(iter(pydantic_errors(exc, data, Suite)))
        raise InputError(f"{path}:{line}: {where}: {message}") from None


def unknown_names(engine: Engine, path: Path, data: Any, index: int, test: SuiteTest) -> list[str]:
    """What test ``index`` expects of a rule or an action the engine does not have, located in
    the suite: such an expectation can never fail in ``expect_absent`` (and never pass in
    ``expect``), so a misspelt or renamed rule would leave a suite green that checks nothing."""
    rules = [rule.name for rule in engine.ruleset.rules]
    problems = []
    for kind in ("expect", "expect_absent"):
        for number, expectation in enumerate(getattr(test, kind)):
            for key, name, known, what in (
                ("rule", expectation.rule, rules, "no rule is named"),
                ("action", expectation.action, list(engine.actions), "no action is named"),
            ):
                if name is None or name in known:
                    continue
                where = ("tests", index, kind, number, key)
                line = yamlsource.line_of(data, where)
                problems.append(
                    f"{path}:{line}: {dotted(where)}: {what} {name!r}{did_you_mean(name, known)}"
                )
    return problems


def suite_problems(engine: Engine, path: Path) -> list[str]:
    """Every problem of the suite in ``path`` that shows without running it, each located
    (``rulekit check``): invalid YAML, every field that is not valid, no tests, an expectation
    naming a rule or an action ``engine`` does not have, an input file that is not there."""
    try:
        data = yamlsource.load(read_bytes(path))
    except yamlsource.YamlSyntaxError as exc:
        return [f"{path}:{exc.line}: invalid YAML: {exc.message}"]
    except InputError as exc:
        return [str(exc)]
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        return [
            f"{path}:{line}: {where}: {message}"
            for (line, where), message in pydantic_errors(exc, data, Suite)
        ]
    if not suite.tests:
        return [f"{path}: the suite has no tests: it would pass checking nothing"]
    problems = []
    for index, test in enumerate(suite.tests):
        problems += unknown_names(engine, path, data, index, test)
        for number, item in enumerate(test.inputs):
            if item.file is not None and not (path.parent / item.file).is_file():
                where = ("tests", index, "inputs", number, "file")
                line = yamlsource.line_of(data, where)
                problems.append(f"{path}:{line}: {dotted(where)}: no such file {item.file!r}")
    return problems


def run_suite(engine: Engine, path: Path, until: timedelta | None = None) -> SuiteResult:
    """Run every test of a suite file against ``engine`` (with ``until``: each test's clock
    runs that much further after its last input)."""
    result = SuiteResult(str(path))
    try:
        suite, data = load_suite(path)
    except InputError as exc:
        result.error = str(exc)
        return result
    except yamlsource.YamlSyntaxError as exc:
        result.error = f"{path}:{exc.line}: invalid YAML: {exc.message}"
        return result
    if not suite.tests:
        result.error = f"{path}: the suite has no tests: it would pass checking nothing"
        return result
    for index, test in enumerate(suite.tests):
        unknown = unknown_names(engine, path, data, index, test)
        if unknown:
            result.tests.append(TestResult(test.name, failures=unknown))
        else:
            result.tests.append(_run_test(engine, path.parent, test, until))
    return result


def _run_test(
    engine: Engine, base: Path, test: SuiteTest, until: timedelta | None = None
) -> TestResult:
    outcome = TestResult(test.name)
    pipeline = Pipeline(engine, MemoryStore())
    if test.online is not None:
        pipeline.online = frozenset(email.strip().lower() for email in test.online)
    if test.now is not None:
        try:
            pipeline.start(test.now)
        except ClockError as exc:
            outcome.failures.append(f"now: {exc}")
            return outcome
    for index, item in enumerate(test.inputs):
        channel = item.channel or test.channel
        try:
            if item.advance is not None or item.at is not None:
                done = _move_clock(pipeline, item, index)
            elif item.event is not None:
                done = pipeline.events(parse_events(item.event, f"inputs[{index}]"), now=test.now)
            else:
                body = (
                    read_bytes(base / item.file)
                    if item.file is not None
                    else json.dumps(item.payload).encode()
                )
                if channel is None:
                    source = base / item.file if item.file else Path(f"inputs[{index}].json")
                    data = item.payload if item.payload is not None else decode(body, source)
                    done = pipeline.events(parse_events(data, str(source)), now=test.now)
                else:
                    done = pipeline.raw(channel, body, now=test.now)
        except (
            InputError,
            ChannelError,
            ClockError,
            ValueError,
            yamlsource.YamlSyntaxError,
        ) as exc:
            outcome.failures.append(f"input {index + 1}: {exc}")
            return outcome
        _collect(pipeline, done, outcome)
    if until is not None and pipeline.clock is not None:
        try:
            _collect(pipeline, pipeline.advance(pipeline.clock + until), outcome)
        except ClockError as exc:
            outcome.failures.append(f"--until: {exc}")
            return outcome
    unused = list(outcome.actual)
    for expected in test.expect:
        found = next((a for a in unused if expected.matches(a)), None)
        if found is None:
            outcome.failures.append(f"expected an action: {expected.describe()}")
        else:
            unused.remove(found)
    for absent in test.expect_absent:
        for actual in outcome.actual:
            if absent.matches(actual):
                outcome.failures.append(
                    f"expected no action matching {absent.describe()}, "
                    f"but rule {actual['rule']!r} planned {actual['action']}"
                )
    if test.exact and unused:
        for actual in unused:
            outcome.failures.append(f"unexpected action: {actual['action']} by {actual['rule']!r}")
    return outcome


def _move_clock(pipeline: Pipeline, item: SuiteInput, index: int) -> Outcome:
    if item.at is not None:
        if pipeline.clock is not None and item.at < pipeline.clock:
            raise ValueError(
                f"at {item.at.isoformat()} is before the clock ({pipeline.clock.isoformat()}): "
                "time never goes back"
            )
        return pipeline.advance(item.at)
    if pipeline.clock is None:
        raise ValueError("advance needs a time to start from: give the test `now:` or `at:`")
    assert item.advance is not None
    return pipeline.advance(pipeline.clock + item.advance)


def _collect(pipeline: Pipeline, done: Outcome, outcome: TestResult) -> None:
    for event, plan in done.events:
        # a timer's actions carry the simulated time it fired (``at:`` in an expectation)
        fired = {"at": plan.firing.fired_at} if plan.firing is not None else {}
        # an action the plan skips (e.g. an autoreply to a recovered message) does not happen
        for planned in plan:
            if not planned.skipped:
                _, problem = pipeline.describe(event, planned)
                failing = {"would_fail": problem} if problem else {}
                outcome.actual.append({**planned.as_dict(), **fired, **failing})
        outcome.failures.extend(f"plan error: {e}" for e in plan.errors)


def report(results: list[SuiteResult]) -> tuple[str, int, int]:
    """Readable report; returns (text, passed, failed)."""
    lines: list[str] = []
    passed = failed = 0
    for suite in results:
        lines.append(f"── {suite.path}")
        if suite.error:
            lines.append(f"   error: {suite.error}")
            failed += 1
            continue
        for test in suite.tests:
            if test.passed:
                passed += 1
                lines.append(f"   ✓ {test.name}")
                continue
            failed += 1
            lines.append(f"   ✗ {test.name}")
            for failure in test.failures:
                lines.append(f"       - {failure}")
            lines.append("       actual actions:")
            for actual in test.actual or [{"rule": "-", "action": "(none)", "params": {}}]:
                params = json.dumps(actual["params"], ensure_ascii=False, default=str)
                when = f" at {actual['at'].isoformat()}" if actual.get("at") else ""
                lines.append(f"       + {actual['action']} ({actual['rule']}){when}: {params}")
                if actual.get("would_fail"):  # planned, but the daemon would dead-letter it
                    lines.append(f"         would fail: {actual['would_fail']}")
    lines.append(f"{passed} passed, {failed} failed")
    return text_lines(lines), passed, failed
