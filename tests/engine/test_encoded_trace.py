"""The trace the daemon records, joined from the parts the engine keeps encoded
(``encoded_trace``), is the text of the trace encoded whole (``trace_json(trace_of(plan))``):
on random rule sets and events, whatever the events before left in the engine's shared parts."""

from __future__ import annotations

import json
import pickle
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scaffold import make_event, write
from test_index_equivalence import PLUGINS, condition, in_full
from test_index_equivalence import event as event_fields

from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.engine.explain import decision_code
from rulekit.engine.plan import Plan, PlannedAction
from rulekit.engine.prepared import MAX_TRACES, prepare
from rulekit.engine.trace import encoded_trace, matched_rules, trace_of
from rulekit.event import Event
from rulekit.store.codec import EncodedTrace, to_json, trace_json

ACTIONS = [
    {"play_sound": {"sound": "bell", "to": "everyone"}},  # constant
    {"autoreply": {"text": "Hello, straße"}},  # constant, skipped for a recovered event
    {"autoreply": {"text": "About {{ message.text }}"}},  # rendered per event
    {"tag": {"add": ["vip"]}},  # changes the conversation: the actions after it see it
    {"assign": {"group": "support"}},  # leaves the assignee to the run (decided later)
]
CONFIG = """
channels:
  online-chat: {provider: chatra, default_group: support}
groups: [support]
agents:
  - {email: anna@example.com, groups: [support], channels: [online-chat]}
"""

rule = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["created", ["created", "message"]]),
        "if": st.one_of(st.none(), condition, st.lists(condition, min_size=1, max_size=2)),
        "do": st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=2),
        "cooldown": st.sampled_from([None, None, "10m"]),
        "stop": st.sampled_from([False, False, False, True]),
        "allow_own_events": st.booleans(),
    }
)
event = st.tuples(
    event_fields,
    st.sampled_from(["channel", "channel", "rulekit"]),
    st.booleans(),
    st.sampled_from([None, None, "\ud800 a lone surrogate"]),
)


class Marks:
    """Cooldown marks: every rule whose name ends in an even digit is cooling down."""

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        return datetime(2100, 1, 1).astimezone() if int(rule[-1]) % 2 == 0 else None


def engine_for(rules: list[dict[str, Any]], folder: Path) -> Engine:
    documents = []
    for index, spec in enumerate(rules):
        item = {
            "name": f"règle {index}",
            "on": {"channel": "online-chat", "event": spec["event"]},
            "do": spec["do"],
        }
        item.update({key: spec[key] for key in ("if", "cooldown", "stop") if spec[key]})
        if spec["allow_own_events"]:
            item["allow_own_events"] = True
        documents.append(item)
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(documents, sort_keys=False), encoding="utf-8")
    config = write(folder / "rulekit.yaml", CONFIG)
    return Engine.from_path(path, load_config(config, PLUGINS), plugins=PLUGINS)


def make(fields: dict[str, Any], origin: str, recovered: bool, text: str | None) -> Event:
    conversation = {"id": "c1", "group": "support"}
    e = make_event(**fields, origin=origin, recovered=recovered, conversation=conversation)
    if text is not None:
        e.message.text = text
    return e


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rules=st.lists(rule, min_size=4, max_size=12), events=st.lists(event, min_size=4, max_size=8)
)
def test_the_joined_trace_is_the_trace_encoded_whole(rules, events) -> None:
    with tempfile.TemporaryDirectory() as folder:
        warm = engine_for(rules, Path(folder))
        for spec in events:
            e = make(*spec)
            for state in (None, Marks()):
                plan = warm.evaluate(e, state, explain=True)
                whole = trace_of(plan, rules_version=warm.version)
                encoded = encoded_trace(plan, rules_version=warm.version)
                assert encoded.text == trace_json(whole)
                assert json.loads(encoded.text) == whole
                assert encoded.matched == [t.name for t in plan.rules if t.matched]
                assert matched_rules(encoded) == matched_rules(whole)
                for index, action in enumerate(plan.actions):
                    # an assign by strategy leaves the assignee to the run: to every later action
                    assigns = any(b.action == "assign" for b in plan.actions[:index])
                    assert action.decided_later == ({"assignee"} if assigns else set())
                expected = in_full(warm, e)
                for trace in plan.rules:
                    if trace.reason in ("conditions hold", "conditions do not hold"):
                        # a candidate's trace is the trace of its evaluation in full
                        outcomes = trace.compact()["outcomes"]
                        assert (trace.matched, outcomes) == expected[trace.name]
                # an engine that has seen no event before plans and explains it the same way
                cold = engine_for(rules, Path(folder))
                fresh = cold.evaluate(e, state, explain=True)
                assert encoded_trace(fresh, rules_version=cold.version).text == encoded.text
                assert [planned(a) for a in fresh] == [planned(a) for a in plan]


def planned(a: PlannedAction) -> tuple[Any, ...]:
    seen = a.seen.model_dump() if a.seen is not None else None
    return (a.rule, a.action, a.params, a.skipped, seen, a.decided_later)


def test_a_shared_trace_is_the_trace_of_each_plan_that_decides_its_rule_alike(
    tmp_path: Path,
) -> None:
    rules = write(
        tmp_path / "r.yaml",
        """
        - name: german
          on: {channel: online-chat, event: created}
          if: {any: ["client.country == 'DE'", "'hallo' in message.text|lower"]}
          do: [{play_sound: {sound: bell}}]
        - name: tagged
          on: {channel: online-chat, event: created}
          if: "client.country == 'DE'"
          do: [{tag: {add: [de]}}]
        - name: after the tag
          on: {channel: online-chat, event: created}
          do: [{play_sound: {sound: bell}}]
        """,
    )
    engine = Engine.from_path(rules, None, plugins=PLUGINS)
    at = make_event(client={"country": "AT"}, message={"text": "Hallo"})
    de = make_event(client={"country": "DE"}, message={"text": "Hallo"}, conversation={"id": "c"})
    first, second = engine.evaluate(at, explain=True), engine.evaluate(at, explain=True)
    assert first.rules[0] is second.rules[0]  # decided alike: one trace
    assert first.actions[0] is second.actions[0]
    assert (first.rules[0].matched, first.rules[0].compact()["outcomes"]) == (True, "FT")
    plan = engine.evaluate(de, explain=True)
    assert plan.rules[0].compact()["outcomes"] == "T-"
    # after the tag, the action sees the tagged conversation: its own planned action
    assert plan.actions[2].seen is not None and plan.actions[2].seen.conversation.tags == ["de"]
    assert plan.actions[2] is not first.actions[1]
    assert first.actions[1].seen is None
    text = encoded_trace(plan, rules_version="v1").text
    assert text == trace_json(trace_of(plan, rules_version="v1"))


def _everyone(tmp_path: Path) -> tuple[Engine, Plan]:
    """An engine with one rule that fires on every created chat, and its plan for one."""
    rules = write(
        tmp_path / "r.yaml",
        """
        - name: everyone
          on: {channel: online-chat, event: created}
          do: [{play_sound: {sound: bell}}]
        """,
    )
    engine = Engine.from_path(rules, None, plugins=PLUGINS)
    return engine, engine.evaluate(make_event(), explain=True)


def test_an_encoded_trace_reads_as_the_trace_and_travels_as_its_text(tmp_path: Path) -> None:
    engine, plan = _everyone(tmp_path)
    encoded = encoded_trace(plan, rules_version=engine.version)
    whole = trace_of(plan, rules_version=engine.version)
    assert encoded == whole and dict(encoded) == whole
    assert encoded["plan"] == [
        {"rule": "everyone", "action": "play_sound", "params": whole["plan"][0]["params"]}
    ]
    back = pickle.loads(pickle.dumps(encoded))
    assert isinstance(back, EncodedTrace)
    assert (back.text, back.matched) == (encoded.text, ["everyone"])
    assert trace_json(back) == to_json(whole)


def test_a_trace_with_text_msgspec_refuses_is_written_whole(tmp_path: Path) -> None:
    _, plan = _everyone(tmp_path)
    plan.errors.append("\ud800 a lone surrogate")
    encoded = encoded_trace(plan, rules_version=None)
    assert encoded.text == to_json(trace_of(plan))
    assert encoded.matched == ["everyone"]


def test_a_rule_keeps_a_bounded_number_of_traces_to_share(tmp_path: Path) -> None:
    conditions = ", ".join(f"client.country != 'C{n}'" for n in range(8))
    rules = write(
        tmp_path / "r.yaml",
        f"""
        - name: many ways
          on: {{channel: online-chat, event: created}}
          if: [{conditions}]
          do: [{{play_sound: {{sound: bell}}}}]
        """,
    )
    engine = Engine.from_path(rules, None, plugins=PLUGINS)
    prepared = prepare(engine.rules[0], engine.index)
    for n in range(2 * MAX_TRACES):  # more ways than are kept (any, not only the possible)
        outcomes: list[bool | None] = [n >> bit & 1 == 1 for bit in range(8)]
        trace = prepared.trace(decision_code(False, outcomes))
        assert trace.outcomes == outcomes and not trace.matched
        assert trace.text == to_json(trace.compact())
    assert len(prepared.traces) == MAX_TRACES
