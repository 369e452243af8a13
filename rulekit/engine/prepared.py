"""What the evaluation of one rule prepares once, on its first evaluation: the decider that
decides it from the values the index read, and, when nothing about it varies per event, its
planned actions and the traces of its decisions.

Of the rules the index lets through for an event, many are decided from the values it read and
plan actions whose parameters are constant: their part of a plan, and of the trace the daemon
stores, is then the same for every event that decides them the same way. Those parts are made
once, encoded once (:attr:`RuleTrace.text`, :attr:`PlannedAction.text`), and shared by the
plans (read only), so an event with many matches costs little more than its decisions. The
leading candidates of an event that are all such rules are taken together, with the loops in C
(:func:`take_plain`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain, compress, repeat
from operator import attrgetter, call
from typing import Any, cast

from rulekit.engine.decide import Decider
from rulekit.engine.explain import decision_of, leaves
from rulekit.engine.index import RuleIndex
from rulekit.engine.plan import OUTCOME_CODES, Plan, PlannedAction, RuleTrace, usual_reason
from rulekit.engine.planning import ActionSequence
from rulekit.rules.spec import Rule
from rulekit.store.codec import fast_json

MAX_TRACES = 64
"""How many traces of one rule's decisions are kept to share (a rule with many conditions can
come out many ways; past this many, a decision's trace is made for its plan alone)."""


def _no_conditions(values: dict[str, Any]) -> int:
    """The decider of a rule without conditions: it matches."""
    return 1


class PreparedRule:
    """What the evaluation of one rule prepares once."""

    __slots__ = ("constant", "decider", "name", "plain", "sources", "traces")

    def __init__(self, name: str) -> None:
        self.name = name
        self.decider: Decider | None = None
        """Decides the rule from the values the index read (see :mod:`.decide`)."""
        self.sources: tuple[str, ...] = ()
        """The condition sources, in the order they are explained."""
        self.constant: list[PlannedAction] | None = None
        """For a rule without cooldown or timer whose actions all have constant parameters
        and leave the conversation as it is: its planned actions for an event that the plan's
        earlier actions leave as it is (shared: read only)."""
        self.traces: dict[int, RuleTrace] = {}
        """The trace of each decision of the decider (by its code) that says no more than the
        outcomes: a decision against, or for when :attr:`constant` (shared: read only)."""
        self.plain = False
        """Whether every decision of the rule is its decider's and ends in its shared trace
        and, matched, its :attr:`constant` actions: a rule with a decider and constant actions
        that does not stop the later rules. Candidates so made are taken together
        (:func:`decide_plain`)."""

    def actions_for(self, sequence: ActionSequence) -> list[PlannedAction]:
        """The :attr:`constant` actions as planned after actions that changed the event (or
        leave some of it to their run), as ``sequence`` says."""
        assert self.constant is not None
        event = sequence.event
        seen = event if event is not sequence.original else None
        return [
            PlannedAction(
                planned.rule,
                planned.action,
                planned.model,
                None,
                seen,
                sequence.decided_later,
                planned.dumped,
                planned.entry,
                planned.text,
            )
            for planned in self.constant
        ]

    def outcomes(self, code: int) -> list[bool | None]:
        """The outcomes of the decision the decider gave as ``code`` (a new list)."""
        return decision_of(code, len(self.sources))[1]

    def trace(self, code: int) -> RuleTrace:
        """The shared trace of the decision the decider gave as ``code`` (see :attr:`traces`)."""
        found = self.traces.get(code)
        if found is None:
            matched, outcomes = decision_of(code, len(self.sources))
            codes = "".join([OUTCOME_CODES[outcome] for outcome in outcomes])
            found = RuleTrace(self.name, matched, usual_reason(matched, codes))
            found.sources, found.outcomes = self.sources, outcomes
            found.text = fast_json(found.compact())
            if len(self.traces) < MAX_TRACES:
                self.traces[code] = found
        return found


def prepare(rule: Rule, index: RuleIndex) -> PreparedRule:
    """What the evaluation of ``rule`` can prepare once (on its first evaluation): ``index``
    is the rule index that selects it."""
    prepared = PreparedRule(rule.name)
    if rule.condition is None:
        prepared.decider = _no_conditions
    else:
        prepared.decider = index.decider(rule)
        prepared.sources = tuple(leaf.source for leaf in leaves(rule.condition))
    if (
        not rule.cooldown
        and rule.timing is None
        and all(
            step.validated is not None and not step.action_class.changes_conversation
            for step in rule.steps
        )
    ):
        prepared.constant = []
        for step in rule.steps:
            entry = step.entry(rule.name)
            planned = PlannedAction(
                rule.name, step.action, step.validated, dumped=step.dumped(), entry=entry
            )
            planned.text = fast_json(planned.traced())
            prepared.constant.append(planned)
    prepared.plain = (
        prepared.decider is not None and prepared.constant is not None and not rule.stop
    )
    return prepared


_decider, _traces, _constant = attrgetter("decider"), attrgetter("traces"), attrgetter("constant")
_plain = attrgetter("plain")
_matched = (1).__and__


def decide_plain(
    prepared: list[PreparedRule],
    values: dict[str, Any],
    decided: list[int | None] | None,
    explain: bool,
) -> tuple[list[RuleTrace] | None, Iterable[PlannedAction]]:
    """The traces (when ``explain``) and the actions of the :attr:`~PreparedRule.plain` rules
    ``prepared``, candidates of an event for which the index read ``values`` and that none of
    its rules' actions changed: what the evaluation loop would make of them one by one, made
    with the loops in C (an event can have tens of them). ``decided``: the decisions the
    index's hits made (None for a rule its decider decides). Raises what a decider raises
    (the loop then evaluates them one by one, and says what went wrong)."""
    if decided is None or None in decided:  # the deciders, called from C, cost less then
        decisions = list(map(call, map(_decider, prepared), repeat(values)))
    else:
        decisions = cast(list[int], decided)
    traces: list[RuleTrace] | None = None
    if explain:
        found: list[RuleTrace | None] = list(map(dict.get, map(_traces, prepared), decisions))
        traces = cast(list[RuleTrace], found)
        if not all(found):  # a decision first seen: its trace is made now
            traces = [
                trace or rule.trace(decision)
                for trace, rule, decision in zip(found, prepared, decisions, strict=True)
            ]
    actions = chain.from_iterable(compress(map(_constant, prepared), map(_matched, decisions)))
    return traces, actions


def take_plain(
    rules: list[Rule],
    values: dict[str, Any],
    decided: list[int | None] | None,
    plan: Plan,
    explain: bool,
    prepared_rules: dict[Rule, PreparedRule],
    index: RuleIndex,
) -> int:
    """Decide the leading candidates of ``rules`` that are :attr:`~PreparedRule.plain`
    together (:func:`decide_plain`), adding their traces and actions to ``plan``; how many
    were taken (none when a decider cannot decide: the evaluation loop then says what went
    wrong). ``decided``: the decisions the index's hits made, by candidate (see
    :class:`~rulekit.engine.index.Hit`); ``prepared_rules``: what each rule's evaluation
    prepared, added to for the rules first evaluated now."""
    prepared = list(map(prepared_rules.get, rules))
    if not all(prepared):  # rules first evaluated now
        prepared = [
            found or prepared_rules.setdefault(rule, prepare(rule, index))
            for found, rule in zip(prepared, rules, strict=True)
        ]
    plain = list(map(_plain, prepared))
    count = len(plain) if all(plain) else plain.index(False)
    if count == 0:
        return 0
    taken = cast(list[PreparedRule], prepared if count == len(prepared) else prepared[:count])
    if decided is not None and count < len(decided):
        decided = decided[:count]
    try:
        traces, actions = decide_plain(taken, values, decided, explain)
    except Exception:
        return 0
    if traces is not None:
        plan.rules.extend(traces)
    plan.actions.extend(actions)
    return count
