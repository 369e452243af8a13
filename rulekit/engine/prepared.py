"""What the evaluation of one rule prepares once, on its first evaluation: the decider that
decides it from the values the index read, and, when nothing about it varies per event, its
planned actions and the traces of its decisions.

Of the rules the index lets through for an event, many are decided from the values it read and
plan actions whose parameters are constant: their part of a plan, and of the trace the daemon
stores, is then the same for every event that decides them the same way. Those parts are made
once, encoded once (:attr:`RuleTrace.text`, :attr:`PlannedAction.text`), and shared by the
plans (read only), so an event with many matches costs little more than its decisions.
"""

from __future__ import annotations

from typing import Any

from rulekit.engine.decide import Decider
from rulekit.engine.explain import decision_of, leaves
from rulekit.engine.index import RuleIndex
from rulekit.engine.plan import OUTCOME_CODES, PlannedAction, RuleTrace, usual_reason
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

    __slots__ = ("constant", "decider", "name", "sources", "traces")

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
    return prepared
