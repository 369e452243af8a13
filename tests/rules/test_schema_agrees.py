"""``rulekit schema`` and the loader agree on the shape of a rules file: what the schema accepts
loads (an editor that says a file is fine is right), and what loads is accepted (an editor does
not flag a valid file). Left out: what only the loader can know (names of the config's
channels, calendars, agents, groups and sounds, template syntax and names, addresses, unique
rule names, durations over 1,000 years)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.errors import ValidationErrors

jsonschema = pytest.importorskip("jsonschema")

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "rulekit.yaml"
BASE: dict[str, Any] = {
    "name": "a",
    "on": {"channel": "online-chat", "event": "message"},
    "do": [{"tag": {"add": ["x"]}}],
}
GONE = object()


def rule(**changes: Any) -> list[dict[str, Any]]:
    written = copy.deepcopy(BASE)
    for key, value in changes.items():
        key = key.rstrip("_")  # if_
        if value is GONE:
            written.pop(key, None)
        else:
            written[key] = value
    return [written]


def step(action: str, params: Any) -> list[dict[str, Any]]:
    return rule(do=[{action: params}])


EMAIL = {"subject": "s", "text": "t"}
CASES: dict[str, Any] = {
    "a rule": rule(),
    "a mapping with rules": {"rules": rule()},
    "an empty file": None,
    "rules: with nothing": {"rules": None},
    "no rules": [],
    "another top-level key": {"rules": rule(), "more": 1},
    "a rule that is not a mapping": [None],
    "no name": rule(name=GONE),
    "an empty name": rule(name=""),
    "a name starting with @": rule(name="@x"),
    "no on": rule(on=GONE),
    "on: with nothing": rule(on=None),
    "on: {}": rule(on={}),
    "channel: with nothing": rule(on={"channel": None}),
    "event: with nothing": rule(on={"event": None}),
    "an unknown key in on": rule(on={"channels": "online-chat"}),
    "description: with nothing": rule(description=None),
    "a number as description": rule(description=5),
    "enabled: 'no'": rule(enabled="no"),
    "enabled: 1": rule(enabled=1),
    "enabled: with nothing": rule(enabled=None),
    "stop: 'yes'": rule(stop="yes"),
    "allow_own_events: 0": rule(allow_own_events=0),
    "if: with nothing": rule(if_=None),
    "if: ''": rule(if_=""),
    "if: []": rule(if_=[]),
    "if: a boolean": rule(if_=True),
    "if: a number": rule(if_=1),
    "if: a list in a list": rule(if_=[["true", "false"]]),
    "all: []": rule(if_={"all": []}),
    "any: []": rule(if_={"any": []}),
    "any: a string": rule(if_={"any": "true"}),
    "not: a list": rule(if_={"not": ["true"]}),
    "all and any in one mapping": rule(if_={"all": ["true"], "any": ["true"]}),
    "an unknown condition key": rule(if_={"none": ["true"]}),
    "cooldown: 1.5m": rule(cooldown="1.5m"),
    "cooldown: '30 m'": rule(cooldown="30 m"),
    "cooldown: 30 (seconds)": rule(cooldown=30),
    "cooldown: 0.5": rule(cooldown=0.5),
    "cooldown: 0s": rule(cooldown="0s"),
    "cooldown: 0.0m": rule(cooldown="0.0m"),
    "cooldown: 0.01m": rule(cooldown="0.01m"),
    "cooldown: 007s": rule(cooldown="007s"),
    "cooldown: 0": rule(cooldown=0),
    "cooldown: -5": rule(cooldown=-5),
    "cooldown: 30M": rule(cooldown="30M"),
    "cooldown: 1w": rule(cooldown="1w"),
    "cooldown: true": rule(cooldown=True),
    "cooldown: with nothing": rule(cooldown=None),
    "after: 5m": rule(after="5m"),
    "after: 0s": rule(after="0s"),
    "after: business": rule(after={"business": "5m", "calendar": "support"}),
    "after: business, 0s": rule(after={"business": "0s", "calendar": "support"}),
    "after: business without calendar": rule(after={"business": "5m"}),
    "after: business, another key": rule(after={"business": "5m", "calendar": "x", "y": 1}),
    "after: with nothing": rule(after=None),
    "unless without after": rule(unless="true"),
    "cancel_on without after": rule(cancel_on=["closed"]),
    "restart without after": rule(restart=True),
    "max_late without after": rule(max_late="1h"),
    "unless: with nothing, without after": rule(unless=None),
    "restart: with nothing, without after": rule(restart=None),
    "unless with after: with nothing": rule(unless="true", after=None),
    "a timed rule": rule(
        after="5m", unless="true", cancel_on="closed", restart=True, max_late="2h"
    ),
    "a timed rule, nulls": rule(after="5m", unless=None, cancel_on=None, restart=None),
    "max_late: 0s": rule(after="5m", max_late="0s"),
    "an unknown key": rule(priority=1),
    "do: []": rule(do=[]),
    "do: with nothing": rule(do=None),
    "an empty step": rule(do=[{}]),
    "a step of two actions": rule(do=[{"tag": {"add": ["x"]}, "set": {"priority": "low"}}]),
    "an unknown action": step("slak", {}),
    "play_sound: with nothing": step("play_sound", None),
    "assign: {}": step("assign", {}),
    "tag: with nothing": step("tag", None),
    "tag: {}": step("tag", {}),
    "tag: empty lists": step("tag", {"add": [], "remove": []}),
    "tag: remove only": step("tag", {"add": [], "remove": ["x"]}),
    "tag: add a string": step("tag", {"add": "x"}),
    "set: {}": step("set", {}),
    "set: priority with nothing": step("set", {"priority": None}),
    "set: fields {}": step("set", {"fields": {}}),
    "set: a field": step("set", {"fields": {"plan": "pro"}}),
    "set: an unknown priority": step("set", {"priority": "asap"}),
    "set: a templated priority": step("set", {"priority": "{{ client.custom.p }}"}),
    "webhook: with nothing": step("webhook", None),
    "email: one recipient": step("email", {"to": "a@shop.example", **EMAIL}),
    "email: a list": step("email", {"to": ["a@shop.example", "assignee"], **EMAIL}),
    "email: an empty list": step("email", {"to": [], **EMAIL}),
    "email: a templated recipient": step("email", {"to": "{{ client.email }}", **EMAIL}),
    "email: a templated recipient in a list": step(
        "email", {"to": ["{{ client.email }}"], **EMAIL}
    ),
    "slack: a number as text": step("slack", {"channel": "#a", "text": 5}),
    "telegram: a number as chat": step("telegram", {"chat_id": -100123, "text": "x"}),
    "telegram: a templated topic": step(
        "telegram", {"chat_id": "1", "text": "x", "message_thread_id": "{{ env.TOPIC }}"}
    ),
    "telegram: a topic 0": step("telegram", {"chat_id": "1", "text": "x", "message_thread_id": 0}),
    "autoreply: empty text": step("autoreply", {"text": ""}),
    "autoreply: a templated flag": step("autoreply", {"text": "x", "on_recovered": "{{ true }}"}),
    "autoreply: an unknown parameter": step("autoreply", {"text": "x", "loud": True}),
    "slack: an empty channel": step("slack", {"channel": "", "text": "x"}),
    "telegram: an empty chat": step("telegram", {"chat_id": "", "text": "x"}),
    "webhook: a text with its type": step(
        "webhook", {"to": "crm", "text": "a", "content_type": "text/plain"}
    ),
    "webhook: a type without text": step("webhook", {"to": "crm", "content_type": "text/csv"}),
    "webhook: a type with nothing": step("webhook", {"to": "crm", "content_type": None}),
    "webhook: body and text": step("webhook", {"to": "crm", "body": {"a": 1}, "text": "a"}),
    "webhook: body, text with nothing": step("webhook", {"to": "crm", "body": {}, "text": None}),
    "webhook: a templated target": step("webhook", {"to": "{{ env.TARGET }}"}),
    "autoreply: a flag as 1": step("autoreply", {"text": "x", "on_recovered": 1}),
    "autoreply: a flag as 'true'": step("autoreply", {"text": "x", "on_recovered": "true"}),
    "assign: a flag as 'no'": step("assign", {"only_online": "no"}),
    "telegram: a chat as true": step("telegram", {"chat_id": True, "text": "x"}),
    "telegram: a topic as text": step(
        "telegram", {"chat_id": "1", "text": "x", "message_thread_id": "5"}
    ),
    "telegram: a topic as true": step(
        "telegram", {"chat_id": "1", "text": "x", "message_thread_id": True}
    ),
    "webhook: a templated type": step(
        "webhook", {"to": "crm", "text": "a", "content_type": "{{ env.TYPE }}"}
    ),
}


@pytest.fixture(scope="module")
def validator() -> Any:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _loads(tmp_path: Path, document: Any) -> str | None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(json.dumps(document))  # JSON is YAML
    try:
        Engine.from_path(rules, CONFIG)
    except ValidationErrors as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", list(CASES))
def test_the_schema_accepts_what_the_loader_loads(
    validator: Any, tmp_path: Path, case: str
) -> None:
    document = CASES[case]
    problem = _loads(tmp_path, document)
    accepted = validator.is_valid(document)
    assert accepted == (problem is None), problem or "the schema refuses a file that loads"


EVENT = {"event": {"channel": "online-chat", "event": "created"}}


def suite(**changes: Any) -> dict[str, Any]:
    test = {"name": "t", "inputs": [EVENT], "expect": [{"action": "tag"}]}
    for key, value in changes.items():
        if value is GONE:
            test.pop(key, None)
        else:
            test[key] = value
    return {"tests": [test]}


SUITES: dict[str, Any] = {
    "a suite": suite(),
    "no tests": {"tests": []},
    "tests: with nothing": {"tests": None},
    "format 2": {**suite(), "format": 2},
    "no name": suite(name=GONE),
    "no inputs": suite(inputs=[]),
    "an input of two kinds": suite(inputs=[{**EVENT, "advance": "5m"}]),
    "an input of no kind": suite(inputs=[{"channel": "online-chat"}]),
    "an event with nothing": suite(inputs=[{"event": None}]),
    "a payload with nothing": suite(inputs=[{"payload": None}]),
    "an empty file name": suite(inputs=[{"file": ""}]),
    "advance: 5m": suite(inputs=[EVENT, {"advance": "5m"}]),
    "advance: 300 (seconds)": suite(inputs=[EVENT, {"advance": 300}]),
    "advance: 0s": suite(inputs=[EVENT, {"advance": "0s"}]),
    "at: with an offset": suite(inputs=[EVENT, {"at": "2026-12-07T09:05:00+01:00"}]),
    "at: in UTC": suite(inputs=[EVENT, {"at": "2026-12-07T09:05:00Z"}]),
    "at: without an offset": suite(inputs=[EVENT, {"at": "2026-12-07T09:05:00"}]),
    "at: not a time": suite(inputs=[EVENT, {"at": "tomorrow"}]),
    "now: without an offset": suite(now="2026-12-07T09:05:00"),
    "nothing checked": suite(expect=GONE),
    "exact: true alone": suite(expect=GONE, exact=True),
    "exact: false alone": suite(expect=GONE, exact=False),
    "expect: [] and expect_absent": suite(expect=[], expect_absent=[{"action": "tag"}]),
    "would_fail: words": suite(expect=[{"action": "tag", "would_fail": "capacity"}]),
    "would_fail: 1": suite(expect=[{"action": "tag", "would_fail": 1}]),
    "online: one email": suite(online="anna@shop.example.com"),
    "online: with nothing": suite(online=None),
}


@pytest.mark.parametrize("case", list(SUITES))
def test_the_schema_accepts_the_suites_the_loader_reads(
    validator: Any, tmp_path: Path, case: str
) -> None:
    from rulekit.audit.suites import suite_problems

    document = SUITES[case]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(json.dumps(rule()))
    (rules / "tests.yaml").write_text(json.dumps(document))
    engine = Engine.from_path(rules, CONFIG)
    problems = suite_problems(engine, rules / "tests.yaml")
    assert validator.is_valid(document) == (not problems), problems or "the schema refuses it"
