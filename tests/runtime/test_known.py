"""The daemon's main process knows its rules without compiling them: validated in another
process, with the same errors and warnings as a full load, and an engine that refuses to
evaluate."""

from __future__ import annotations

import pickle

import pytest

from rulekit.errors import Location, RuleError, ValidationErrors
from rulekit.event import Event
from rulekit.runtime.known import SENT_RULES, load_known
from rulekit.snapshot import load_snapshot, problems_of
from tests.runtime.daemons import write_setup

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  if: client.display_name != "bot"
  do:
    - autoreply: {text: "Hello {{ client.display_name }}"}
- name: Nudge
  on: {channel: online-chat, event: [created, message]}
  after: 10m
  unless: conversation.status == "closed"
  cancel_on: [message, agent_replied]
  do:
    - tag: {add: [waiting]}
- name: Off
  on: {channel: online-chat, event: created}
  after: {business: 1h, calendar: nowhere}
  do:
    - tag: {add: [late]}
"""

BROKEN = """\
- name: Greet
  on: {channel: online-chat, event: created}
  if: client.nmae == "x"
  do:
    - autoreply: {text: "Hello {{ client.display_name }"}
- name: Greet
  on: {channel: online-chat, event: creatd}
  do:
    - nosuchaction: {}
"""


def outline(snapshot):
    return [
        (
            rule.name,
            str(rule.location),
            rule.channels,
            rule.events,
            [(step.action, step.action_class, str(step.location)) for step in rule.steps],
            rule.timing.describe() if rule.timing else None,
            rule.timing.cancel_on if rule.timing else None,
            rule.cooldown,
            rule.stop,
        )
        for rule in snapshot.engine.rules
    ]


def test_the_known_rules_are_those_a_full_load_compiles_with_its_warnings(tmp_path):
    config = write_setup(tmp_path, RULES)
    full = load_snapshot(config)
    known = load_known(config)
    assert outline(known) == outline(full)
    assert [rule.name for rule in known.engine.rules] == ["Greet", "Nudge", "Off"]
    assert [str(w) for w in known.engine.ruleset.warnings] == [
        str(w) for w in full.engine.ruleset.warnings
    ]
    assert any("unknown calendar 'nowhere'" in str(w) for w in known.engine.ruleset.warnings)
    assert problems_of(known) == problems_of(full)
    assert known.version == full.version
    assert known.files == full.files
    assert sorted(known.engine.actions) == sorted(full.engine.actions)
    assert known.engine.reads_team is full.engine.reads_team is False
    assert known.engine.evaluates is False and full.engine.evaluates is True
    assert all(rule.condition is None for rule in known.engine.rules)


def test_rules_sent_in_several_parts_arrive_whole_and_in_order(tmp_path):
    many = "".join(
        f"- name: Rule {n}\n"
        "  on: {channel: online-chat, event: created}\n"
        f"  if: client.id == 'c{n}'\n"
        f"  do: [{{tag: {{add: [t{n}]}}}}]\n"
        for n in range(2 * SENT_RULES + 3)
    )
    config = write_setup(tmp_path, many)
    known = load_known(config)
    assert outline(known) == outline(load_snapshot(config))
    assert [rule.position for rule in known.engine.rules] == list(range(2 * SENT_RULES + 3))


def test_an_engine_that_only_knows_its_rules_refuses_to_evaluate(tmp_path):
    known = load_known(write_setup(tmp_path, RULES))
    event = Event(channel="online-chat", event="created")
    with pytest.raises(RuntimeError, match="loaded to be known, not evaluated"):
        known.engine.evaluate(event)
    with pytest.raises(RuntimeError, match="loaded to be known, not evaluated"):
        known.engine.fire("Nudge", event, event.occurred_at, event.occurred_at)


def test_invalid_rules_are_refused_with_the_errors_of_a_full_load(tmp_path):
    config = write_setup(tmp_path, BROKEN)
    with pytest.raises(ValidationErrors) as full:
        load_snapshot(config)
    with pytest.raises(ValidationErrors) as known:
        load_known(config)
    assert [str(error) for error in known.value.errors] == [
        str(error) for error in full.value.errors
    ]
    assert str(known.value) == str(full.value)
    assert len(known.value.errors) >= 3
    assert all(error.location and error.location.line for error in known.value.errors)


def test_a_config_error_is_refused_the_same(tmp_path):
    config = write_setup(tmp_path)
    config.write_text(config.read_text() + "nosuchkey: 1\n")
    with pytest.raises(Exception) as full:
        load_snapshot(config)
    with pytest.raises(Exception) as known:
        load_known(config)
    assert type(known.value) is type(full.value)
    assert str(known.value) == str(full.value)


def test_validation_errors_travel_between_processes_whole():
    errors = ValidationErrors(
        [RuleError("unknown action", Location("rules.yaml", 3, "[0].do")), RuleError("bad")]
    )
    again = pickle.loads(pickle.dumps(errors))
    assert [str(error) for error in again.errors] == [str(error) for error in errors.errors]
    assert again.errors[0].location == Location("rules.yaml", 3, "[0].do")
    assert str(again) == str(errors)
