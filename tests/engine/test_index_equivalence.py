"""The index and the rules it decides from the values it read (``rulekit.engine.decide``) give
the plan and the trace that evaluating every rule of the bucket in full gives: on random rule
sets and events with missing fields, values that are not text, and letters whose case changes
their length (``ß``, ``İ``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scaffold import make_event, write

from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.engine.explain import compile_explainer
from rulekit.engine.plan import OUTCOME_CODES
from rulekit.event import Event
from rulekit.expr.budget import with_budget
from rulekit.plugins import load_plugins

PLUGINS = load_plugins()
CONFIG = load_config(None, PLUGINS)

COUNTRIES = ["DE", "de", "AT", "İT"]
WORDS = ["straße", "STRASSE", "ß", "i̇", "İ", "Ok"]
PLANS = ["gold", "go", "GOLD"]


def _quote(value: str) -> str:
    return "'" + value + "'"


word = st.sampled_from(WORDS)
# tests of fields whose values are always of a plain type in ``plain_event`` (text, or a
# country that may be missing)
plain_leaf = st.one_of(
    st.builds(lambda v: f"client.country == {_quote(v)}", st.sampled_from(COUNTRIES)),
    st.builds(
        lambda vs: f"client.country in [{', '.join(map(_quote, vs))}]",
        st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3),
    ),
    st.builds(lambda v: f"client.country|lower == {_quote(v.lower())}", st.sampled_from(COUNTRIES)),
    st.builds(lambda v: f"{_quote(v)} in message.text|lower", word),
    st.builds(lambda v: f"{_quote(v.lower())} in message.text|lower", word),
    st.builds(lambda v: f"{_quote(v)} in message.text|upper", word),
    st.builds(lambda v: f"{_quote(v)} in message.text", word),
    st.builds(lambda v: f"message.text.startswith({_quote(v)})", word),
    st.builds(lambda v: f"(message.text|lower).endswith({_quote(v)})", word),
    st.builds(
        lambda vs: f"message.text.endswith(({', '.join(map(_quote, vs))},))",
        st.lists(word, min_size=1, max_size=2),
    ),
)
leaf = st.one_of(
    plain_leaf,
    # a field whose value may be a number, a list or missing
    st.builds(lambda v: f"client.custom.plan == {_quote(v)}", st.sampled_from(PLANS)),
    st.builds(lambda v: f"client.custom.plan.startswith({_quote(v)})", st.sampled_from(PLANS)),
    st.builds(lambda v: f"{_quote(v)} in client.custom.plan", st.sampled_from(PLANS)),
    st.just("client.custom.plan == 3"),
    st.just("client.custom.plan in [3, 'gold', none]"),
    st.just("not client.email"),  # not indexable: the rule is evaluated in full
)
condition = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda c: {"not": c}, inner),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=5,
)
rule = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["created", "created", ["created", "message"]]),
        "if": st.one_of(st.none(), condition, st.lists(condition, min_size=1, max_size=3)),
        "stop": st.booleans(),
    }
)
text = st.one_of(
    st.none(), st.lists(st.sampled_from([*WORDS, " ", "ok"]), min_size=1, max_size=4).map("".join)
)
event = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["created", "message"]),
        "client": st.fixed_dictionaries(
            {
                "country": st.one_of(st.none(), st.sampled_from(COUNTRIES)),
                "email": st.one_of(st.none(), st.just("a@b.example")),
                "custom": st.one_of(
                    st.just({}),
                    st.fixed_dictionaries(
                        {
                            "plan": st.one_of(
                                st.sampled_from(PLANS),
                                st.integers(2, 4),
                                st.lists(st.sampled_from(PLANS), max_size=2),
                                st.none(),
                            )
                        }
                    ),
                ),
            }
        ),
        "message": st.fixed_dictionaries({"text": text}),
    }
)


def engine_for(rules: list[dict[str, Any]], folder: Path) -> Engine:
    documents = []
    for index, spec in enumerate(rules):
        item: dict[str, Any] = {
            "name": f"rule {index}",
            "on": {"channel": "online-chat", "event": spec["event"]},
            "do": [{"autoreply": {"text": f"rule {index}"}}],
        }
        if spec["if"] is not None:
            item["if"] = spec["if"]
        if spec["stop"]:
            item["stop"] = True
        documents.append(item)
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(documents, sort_keys=False), encoding="utf-8")
    return Engine.from_path(path, CONFIG, plugins=PLUGINS)


def in_full(engine: Engine, e: Event) -> dict[str, tuple[bool, str]]:
    """Every rule of the event's bucket evaluated in full, without the index: whether it
    holds, and its outcomes as a stored trace writes them (``E`` for a failure)."""
    now = e.occurred_at.astimezone(engine.config.timezone)
    out = {}
    for rule in engine.index.bucket(e.channel, e.event).rules:
        if rule.condition is None:
            out[rule.name] = (True, "")
            continue
        explainer = compile_explainer(rule.condition, engine.program)
        outcomes: list[bool | None] = []
        try:
            held = with_budget(lambda: explainer(e, now, engine.env, outcomes))  # noqa: B023
        except Exception:
            failed = "E"
            held = False
        else:
            failed = ""
        codes = "".join(OUTCOME_CODES[outcome] for outcome in outcomes) + failed
        out[rule.name] = (bool(held), codes)
    return out


@pytest.mark.slow
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rules=st.lists(rule, min_size=6, max_size=14), events=st.lists(event, min_size=6, max_size=10)
)
def test_indexed_evaluation_equals_evaluating_every_rule(rules, events) -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = engine_for(rules, Path(folder))
    for fields in events:
        e = make_event(**fields)
        expected = in_full(engine, e)
        fired = []
        for name, (held, _) in expected.items():
            if held:
                fired.append(name)
                if rules[int(name.split()[1])]["stop"]:
                    break
        assert [a.rule for a in engine.evaluate(e)] == fired
        plan = engine.evaluate(e, explain=True, excluded=True)
        assert [a.rule for a in plan] == fired
        for trace in plan.rules:
            if trace.reason.startswith("stopped by"):
                continue
            if trace.reason.startswith("not a candidate"):
                assert not expected[trace.name][0], trace.name
                continue
            compact = trace.compact()
            # a candidate's trace is the trace of its evaluation in full
            assert (trace.matched, compact["outcomes"]) == expected[trace.name], trace.name


# the index's hits decide a rule made of one plain test or an `any` of them
plain_rule = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["created", "created", ["created", "message"]]),
        "if": st.one_of(
            plain_leaf,
            st.builds(lambda cs: {"any": cs}, st.lists(plain_leaf, min_size=1, max_size=4)),
            st.builds(lambda cs: [{"any": cs}], st.lists(plain_leaf, min_size=2, max_size=3)),
            plain_leaf,
        ),
        "stop": st.sampled_from([False, False, False, True]),
    }
)
plain_event = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["created", "message"]),
        "client": st.fixed_dictionaries(
            {"country": st.one_of(st.none(), st.sampled_from(COUNTRIES))}
        ),
        "message": st.fixed_dictionaries(
            {"text": st.lists(st.sampled_from([*WORDS, " ", "ok"]), max_size=4).map("".join)}
        ),
    }
)


@pytest.mark.slow
@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    # enough rules for an event to have many candidates decided together
    rules=st.lists(plain_rule, min_size=24, max_size=40),
    events=st.lists(plain_event, min_size=6, max_size=10),
)
def test_rules_the_index_hits_decide_are_decided_as_in_full(rules, events) -> None:
    test_indexed_evaluation_equals_evaluating_every_rule.hypothesis.inner_test(rules, events)


def test_a_rule_the_index_leaves_out_says_so_in_its_trace(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yaml",
        """
        - name: strasse
          on: {channel: online-chat, event: created}
          if: "'straße' in message.text|lower"
          do: [{autoreply: {text: x}}]
        - name: german or gold
          on: {channel: online-chat, event: created}
          if: {any: ["client.country == 'DE'", "client.custom.plan == 'gold'"]}
          do: [{autoreply: {text: x}}]
        """,
    )
    engine = Engine.from_path(rules, CONFIG, plugins=PLUGINS)
    # 'STRASSE'.lower() is 'strasse': no 'ß' (lower, not casefold)
    e = make_event(client={"country": "AT"}, message={"text": "STRASSE"})
    plan = engine.evaluate(e, explain=True, excluded=True)
    assert [(t.name, t.matched, t.reason) for t in plan.rules] == [
        ("strasse", False, "not a candidate: message.text|lower does not contain 'straße'"),
        (
            "german or gold",
            False,
            "not a candidate: none holds: client.country is not 'DE'; "
            "client.custom.plan is not 'gold'",
        ),
    ]
    e = make_event(client={"country": "AT", "custom": {"plan": "gold"}}, message={"text": "Straße"})
    plan = engine.evaluate(e, explain=True)
    assert [(t.name, t.matched, t.compact()["outcomes"]) for t in plan.rules] == [
        ("strasse", True, "T"),
        ("german or gold", True, "FT"),
    ]
    assert plan.excluded == 0


def test_a_value_that_does_not_decide_has_its_rule_evaluated_in_full(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "r.yaml",
        """
        - name: gold plan
          on: {channel: online-chat, event: created}
          if: ["client.custom.plan.startswith('go')", "client.country == 'DE'"]
          do: [{autoreply: {text: x}}]
        """,
    )
    engine = Engine.from_path(rules, CONFIG, plugins=PLUGINS)
    # a list has no startswith: the rule's own evaluation says so, as without the index
    e = make_event(client={"country": "DE", "custom": {"plan": ["gold"]}})
    plan = engine.evaluate(e, explain=True, excluded=True)
    assert len(plan.rules) == 1
    assert not plan.rules[0].matched
    e = make_event(client={"country": "DE", "custom": {"plan": "gold"}})
    assert [a.rule for a in engine.evaluate(e)] == ["gold plan"]
