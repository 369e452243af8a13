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

from itertools import chain
from typing import Any, cast

from rulekit.engine.decide import Decider
from rulekit.engine.explain import decision_of, leaves
from rulekit.engine.index import Bucket, RuleIndex
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
        (:func:`take_coded`)."""

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


class CodedPlans:
    """What the evaluation of a coded bucket's rules prepares (see
    :meth:`~rulekit.engine.index.Bucket.select_codes`): for each code of a
    :attr:`~PreparedRule.plain` rule, the shared trace of its decision and its constant
    actions, once its rule has been evaluated."""

    __slots__ = ("actions", "seen", "traces")

    def __init__(self, size: int) -> None:
        self.traces: list[RuleTrace | None] = [None] * size
        """Each code's shared trace; None for a code not seen yet or not taken together."""
        self.actions: list[list[PlannedAction]] = [[]] * size
        self.seen = [False] * size

    def fill(
        self,
        codes: list[int],
        bucket: Bucket,
        prepared_rules: dict[Rule, PreparedRule],
        index: RuleIndex,
    ) -> None:
        """Prepare the codes of ``codes`` not seen yet."""
        for code in codes:
            if self.seen[code]:
                continue
            self.seen[code] = True
            rule = bucket.rules[code // bucket.stride]
            prepared = prepared_rules.get(rule)
            if prepared is None:
                prepared = prepared_rules[rule] = prepare(rule, index)
            if not prepared.plain:
                continue
            decision = bucket.decisions[code]
            trace = prepared.trace(decision)
            if prepared.traces.get(decision) is trace:  # else not kept to share: one by one
                self.traces[code] = trace
                assert prepared.constant is not None
                self.actions[code] = prepared.constant


def take_coded(
    codes: list[int],
    bucket: Bucket,
    plan: Plan,
    explain: bool,
    prepared_rules: dict[Rule, PreparedRule],
    index: RuleIndex,
) -> int:
    """Add to ``plan`` the traces (when ``explain``) and actions of the leading candidates
    ``codes`` of a coded bucket that are :attr:`~PreparedRule.plain`, the codes deciding them
    (see :meth:`~rulekit.engine.index.Bucket.select_codes`), for an event that none of its
    rules' actions changed: what the evaluation loop would make of them one by one, made with
    the loops in C (an event can have tens of them); how many were taken.
    ``prepared_rules``: what each rule's evaluation prepared, added to for the rules first
    evaluated now."""
    table = bucket.prepared
    if table is None:
        table = bucket.prepared = CodedPlans(len(bucket.decisions))
    traces = list(map(table.traces.__getitem__, codes))
    count = len(codes)
    if not all(traces):
        table.fill(codes, bucket, prepared_rules, index)
        traces = list(map(table.traces.__getitem__, codes))
        if not all(traces):
            count = traces.index(None)
            if count == 0:
                return 0
            del traces[count:]
            codes = codes[:count]
    # every code is of a rule its test matched: each one's constant actions are planned
    if explain:
        plan.rules.extend(cast(list[RuleTrace], traces))
    plan.actions.extend(chain.from_iterable(map(table.actions.__getitem__, codes)))
    return count
