"""The discrimination index: a filter that never changes a plan, and that really prunes."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scaffold import make_event, write

from rulekit.config import load_config
from rulekit.engine.engine import Engine
from rulekit.plugins import load_plugins

PLUGINS = load_plugins()
CONFIG = load_config(None, PLUGINS)

COUNTRIES = ["DE", "AT", "de", "FR"]
WORDS = ["refund", "Hi", "help", "REF", "x"]
DOMAINS = ["@shop.example", ".de", "@x.io"]


def _quote(value: str) -> str:
    return "'" + value + "'"


leaf = st.one_of(
    st.builds(lambda v: f"client.country == {_quote(v)}", st.sampled_from(COUNTRIES)),
    st.builds(lambda v: f"{_quote(v)} == client.country", st.sampled_from(COUNTRIES)),
    st.builds(
        lambda vs: f"client.country in [{', '.join(map(_quote, vs))}]",
        st.lists(st.sampled_from(COUNTRIES), min_size=1, max_size=3),
    ),
    st.builds(lambda v: f"client.country|lower == {_quote(v.lower())}", st.sampled_from(COUNTRIES)),
    st.builds(lambda v: f"message.text.startswith({_quote(v)})", st.sampled_from(WORDS)),
    st.builds(
        lambda vs: f"message.text.startswith(({', '.join(map(_quote, vs))},))",
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=2),
    ),
    st.builds(lambda v: f"message.text.endswith({_quote(v)})", st.sampled_from(WORDS)),
    st.builds(lambda v: f"{_quote(v)} in message.text", st.sampled_from(WORDS)),
    st.builds(lambda v: f"{_quote(v.lower())} in message.text|lower", st.sampled_from(WORDS)),
    st.builds(lambda v: f"client.email.endswith({_quote(v)})", st.sampled_from(DOMAINS)),
    st.builds(lambda v: f"client.custom.plan == {_quote(v)}", st.sampled_from(["gold", "free"])),
    st.just("conversation.group == 'support'"),
    st.just("not client.email"),
    st.just("message.author == 'client' and client.country == 'DE'"),
)
condition = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda c: {"not": c}, inner),
        st.builds(lambda cs: {"any": cs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda cs: {"all": cs}, st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=4,
)
rule = st.fixed_dictionaries(
    {
        "on": st.fixed_dictionaries(
            {"event": st.sampled_from(["created", ["created", "message"], "message"])}
        ),
        "if": st.one_of(st.none(), condition, st.lists(condition, min_size=1, max_size=3)),
        "stop": st.booleans(),
    }
)
event = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["created", "message"]),
        "client": st.fixed_dictionaries(
            {
                "country": st.one_of(st.none(), st.sampled_from(COUNTRIES)),
                "email": st.one_of(
                    st.none(), st.sampled_from(["a@shop.example", "b@x.io", "c@y.de"])
                ),
                "custom": st.one_of(
                    st.just({}), st.fixed_dictionaries({"plan": st.sampled_from(["gold", "free"])})
                ),
            }
        ),
        "message": st.fixed_dictionaries(
            {
                "text": st.one_of(
                    st.none(),
                    st.lists(st.sampled_from([*WORDS, " ", "!"]), max_size=4).map("".join),
                ),
                "author": st.sampled_from(["client", "agent", None]),
            }
        ),
        "conversation": st.fixed_dictionaries(
            {"group": st.sampled_from(["support", "sales", None])}
        ),
    }
)


def engine_for(rules: list[dict[str, Any]], folder: Path) -> Engine:
    documents = []
    for index, spec in enumerate(rules):
        item: dict[str, Any] = {
            "name": f"rule {index}",
            "on": {"channel": "online-chat", **spec["on"]},
            "do": [{"autoreply": {"text": f"{index}: {{{{ client.country }}}}"}}],
        }
        if spec["if"] is not None:
            item["if"] = spec["if"]
        if spec["stop"]:
            item["stop"] = True
        documents.append(item)
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump(documents, sort_keys=False), encoding="utf-8")
    return Engine.from_path(path, CONFIG, plugins=PLUGINS)


def summary(plan) -> list[tuple[str, str, dict[str, Any]]]:
    return [(a.rule, a.action, a.params) for a in plan]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rules=st.lists(rule, min_size=1, max_size=12), events=st.lists(event, min_size=1, max_size=8)
)
def test_fast_mode_and_explain_mode_plan_the_same(rules, events) -> None:
    with tempfile.TemporaryDirectory() as folder:
        engine = engine_for(rules, Path(folder))
    for fields in events:
        e = make_event(**fields)
        fast = engine.evaluate(e)
        explained = engine.evaluate(e, explain=True)
        assert summary(fast) == summary(explained)
        # explain mode evaluates every rule of the bucket, so it is the reference
        matched = [t.name for t in explained.rules if t.matched]
        assert [a.rule for a in explained] == matched


def test_the_index_prunes(tmp_path: Path) -> None:
    lines = []
    for i in range(50):
        lines += [
            f"- name: country {i}",
            "  on: {channel: online-chat, event: created}",
            f"  if: client.country == 'C{i}'",
            "  do: [{autoreply: {text: x}}]",
        ]
    lines += [
        "- name: by prefix",
        "  on: {channel: online-chat, event: created}",
        "  if: [message.text.startswith('refund'), client.country == 'C7' or true]",
        "  do: [{autoreply: {text: x}}]",
        "- name: always",
        "  on: {channel: online-chat, event: created}",
        "  do: [{autoreply: {text: x}}]",
    ]
    engine = Engine.from_path(
        write(tmp_path / "r.yaml", "\n".join(lines) + "\n"), CONFIG, plugins=PLUGINS
    )
    bucket = engine.index.bucket("online-chat", "created")
    assert len(bucket.rules) == 52

    e = make_event(client={"country": "C7"}, message={"text": "hello"})
    candidates = bucket.candidates(e, e.occurred_at, {})
    assert [r.name for r in candidates] == ["country 7", "always"]
    e = make_event(client={"country": "C9"}, message={"text": "refund please"})
    assert [r.name for r in bucket.candidates(e, e.occurred_at, {})] == [
        "country 9",
        "by prefix",
        "always",
    ]
    assert [a.rule for a in engine.evaluate(e)] == ["country 9", "by prefix", "always"]
    assert bucket.chosen[engine.rules[0].name].kind == "eq"
    assert bucket.chosen[engine.rules[50].name].kind == "prefix"
    assert engine.rules[51].name not in bucket.chosen


def test_discriminators_are_chosen_by_how_much_they_narrow(tmp_path) -> None:
    # every rule tests one of three countries (unselective) and its own email domain
    # (selective): the domain is the key to index by, though equality is cheaper to look up
    lines = []
    for n in range(30):
        lines += [
            f"- name: customer {n}",
            "  on: {channel: online-chat, event: created}",
            f"  if: [\"client.country == 'C{n % 3}'\", \"client.email.endswith('@d{n}.example')\"]",
            "  do: [{autoreply: {text: x}}]",
        ]
    engine = Engine.from_path(
        write(tmp_path / "r.yaml", "\n".join(lines) + "\n"), CONFIG, plugins=PLUGINS
    )
    bucket = engine.index.bucket("online-chat", "created")
    assert {d.kind for d in bucket.chosen.values()} == {"suffix"}
    e = make_event(client={"country": "C1", "email": "ana@d4.example"})
    assert [r.name for r in bucket.candidates(e, e.occurred_at, {})] == ["customer 4"]
    assert [a.rule for a in engine.evaluate(e)] == ["customer 4"]  # 4 % 3 == 1
    e = make_event(client={"country": "C0", "email": "ana@d4.example"})
    assert [a.rule for a in engine.evaluate(e)] == []  # a candidate, evaluated in full


def test_a_rule_with_only_alternatives_is_indexed_under_each(tmp_path) -> None:
    rules = (
        "- name: germans or refunds\n"
        "  on: {channel: online-chat, event: created}\n"
        "  if:\n"
        "    - any: [\"client.country == 'DE'\", \"'refund' in message.text|lower\"]\n"
        "  do: [{autoreply: {text: x}}]\n"
        "- name: austrians or vip\n"
        "  on: {channel: online-chat, event: created}\n"
        "  if: \"client.country == 'AT' or client.email.endswith('@vip.example')\"\n"
        "  do: [{autoreply: {text: x}}]\n"
        "- name: anything goes\n"
        "  on: {channel: online-chat, event: created}\n"
        '  if: [{any: ["client.country == \'FR\'", "client.name"]}]\n'
        "  do: [{autoreply: {text: x}}]\n"
    )
    engine = Engine.from_path(write(tmp_path / "r.yaml", rules), CONFIG, plugins=PLUGINS)
    bucket = engine.index.bucket("online-chat", "created")

    def candidates(**fields):
        e = make_event(**fields)
        return [r.name for r in bucket.candidates(e, e.occurred_at, {})]

    # a branch that can hold for any event (client.name) leaves its rule unindexed
    assert candidates(client={"country": "IT"}) == ["anything goes"]
    assert candidates(client={"country": "DE"}) == ["germans or refunds", "anything goes"]
    assert candidates(client={"country": "IT"}, message={"text": "A REFUND"}) == [
        "germans or refunds",
        "anything goes",
    ]
    assert candidates(client={"country": "IT", "email": "x@vip.example"}) == [
        "austrians or vip",
        "anything goes",
    ]
    plan = engine.evaluate(make_event(client={"country": "IT"}), explain=True, excluded=True)
    reasons = {t.name: t.reason for t in plan.rules}
    assert reasons["austrians or vip"] == (
        "not a candidate: none holds: client.country is not 'AT'; client.email is None, not text"
    )
