"""Rules analysed for the index as they load: their expression trees go at once, and the
engine decides, indexes and evaluates them as it would with the trees kept."""

from __future__ import annotations

from pathlib import Path

from scaffold import make_event, write

from rulekit.config import load_config
from rulekit.engine.analysis import RuleAnalysis
from rulekit.engine.engine import Engine
from rulekit.engine.explain import leaves
from rulekit.engine.index import RuleIndex
from rulekit.plugins import load_plugins
from rulekit.rules.loader import RuleLoader

PLUGINS = load_plugins()
CONFIG = load_config(None, PLUGINS)
RULES = """
- name: german
  on: {channel: online-chat}
  if: client.country == 'Germany'
  do: [{autoreply: {text: hallo}}]
- name: refund or not a bot
  on: {channel: online-chat}
  if:
    any: ["message.text.startswith('refund')", {not: "client.email.endswith('@bot.example')"}]
  do: [{autoreply: {text: sorry}}]
- name: same condition again
  on: {channel: online-chat}
  if: client.country == 'Germany'
  do: [{autoreply: {text: again}}]
- name: read in full
  on: {channel: online-chat}
  if: message.text|length > 3
  do: [{autoreply: {text: long}}]
- name: later
  on: {channel: online-chat}
  after: 5m
  unless: client.country == 'Germany'
  do: [{autoreply: {text: late}}]
"""


def test_rules_loaded_from_files_keep_no_expression_trees_and_index_as_with_them(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "rules.yaml", RULES)
    engine = Engine.from_path(path, CONFIG, plugins=PLUGINS)
    for rule in engine.rules:
        assert rule.conjuncts == ()
        unless = rule.timing.unless if rule.timing is not None else None
        for condition in (rule.condition, unless):
            if condition is not None:
                assert all(leaf.node is None for leaf in leaves(condition))
    # the same rules analysed after loading, their trees kept until then
    loader = RuleLoader(PLUGINS, CONFIG)
    rules = loader.load(path).rules
    kept = RuleIndex(rules, loader.program, RuleAnalysis.of(rules, loader.program))
    assert engine.index._options == kept._options
    assert {name: d.codes for name, d in engine.index.decidable.items()} == {
        name: d.codes for name, d in kept.decidable.items()
    }
    assert set(engine.index.decidable) == {"german", "refund or not a bot", "same condition again"}


def test_rules_without_their_trees_evaluate_alike_explained_or_not(tmp_path: Path) -> None:
    engine = Engine.from_path(write(tmp_path / "rules.yaml", RULES), CONFIG, plugins=PLUGINS)
    events = [
        make_event(client={"id": "c", "country": "Germany"}, message={"id": "m", "text": "hi"}),
        make_event(client={"id": "c", "email": "x@bot.example"}, message={"id": "m", "text": "x"}),
        make_event(client={"id": "c"}, message={"id": "m", "text": "refund please"}),
    ]
    for event in events:
        event.conversation.id = "k"
    fired = []
    for event in events:
        fast = engine.evaluate(event)
        explained = engine.evaluate(event, explain=True)
        assert [a.rule for a in fast.actions] == [a.rule for a in explained.actions]
        assert [t.rule for t in fast.timers] == [t.rule for t in explained.timers]
        fired.append([a.rule for a in fast.actions] + [t.rule for t in fast.timers])
    assert fired == [
        ["german", "same condition again", "later"],
        ["later"],
        ["refund or not a bot", "read in full", "later"],
    ]
    due = events[0].occurred_at
    for explain in (False, True):  # the timed rule's ``unless``, with and without its trees
        outcomes = [engine.fire("later", e, due, due, explain=explain).firing for e in events]
        assert [firing.outcome for firing in outcomes if firing is not None] == [
            "unless",
            "fired",
            "fired",
        ]
