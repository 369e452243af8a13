"""The engine: a pure function from an event (and a state snapshot) to a plan.

No I/O happens here. ``rulekit test`` and ``rulekit run`` both call :meth:`Engine.evaluate`; the
daemon only adds persistence and execution.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from rulekit.config import Config
from rulekit.engine.analysis import RuleAnalysis
from rulekit.engine.construction import plugins_and_config
from rulekit.engine.explain import Explainer, compile_explainer, leaves
from rulekit.engine.index import RuleIndex
from rulekit.engine.plan import (
    ConditionResult,
    Cooldown,
    CooldownMarks,
    Plan,
    PlannedAction,
    RuleTrace,
)
from rulekit.engine.planning import ActionSequence, plan_actions, set_timer
from rulekit.engine.prepared import PreparedRule, prepare, take_coded
from rulekit.engine.reasons import (
    ConditionFailed,
    condition_source,
    explain_condition,
    failure_reason,
    passed_over,
)
from rulekit.engine.timers import Firing, TimerCancel, cancellers, real_time_after
from rulekit.event import MAX_OWN_CHAIN, Event, own_chain
from rulekit.expr.budget import OverBudget, with_budget
from rulekit.expr.budget import current as current_budget
from rulekit.plugins import Plugins
from rulekit.rules.collector import collector_paused
from rulekit.rules.conditions import forget_trees, matcher_code
from rulekit.rules.loader import RuleLoader, RuleSet
from rulekit.rules.spec import Condition, Rule, Timing, format_duration, outline
from rulekit.team import Team, TeamFacts

__all__ = [
    "ConditionResult",
    "Cooldown",
    "CooldownMarks",
    "Engine",
    "Plan",
    "PlannedAction",
    "RuleTrace",
]


class Engine:
    """Compiled rules plus the config and plugins they were checked against."""

    index: RuleIndex
    """Which rules an event can match (only in an engine that evaluates)."""

    def __init__(
        self,
        plugins: Plugins,
        config: Config,
        ruleset: RuleSet,
        loader: RuleLoader,
        *,
        evaluates: bool = True,
        analysis: RuleAnalysis | None = None,
    ) -> None:
        self.plugins = plugins
        self.config = config
        self.ruleset = ruleset
        self.rules = ruleset.rules
        self.actions = loader.actions
        self.evaluates = evaluates
        """Whether the rules are here to be evaluated. An engine of rules only to be known
        (the daemon's main process, see :mod:`rulekit.runtime.known`: its evaluation workers
        load their own) keeps each rule's name, location, channels, events, timing and
        actions, and the warnings, but none of the conditions, templates and index evaluating
        needs, and refuses to evaluate."""
        if self.evaluates:
            if analysis is None:  # the rules were loaded with their expression trees
                analysis = RuleAnalysis.of(ruleset.rules, loader.program)
            self.index = RuleIndex(ruleset.rules, loader.program, analysis)
        else:
            for rule in self.rules:
                outline(rule)
        self.by_name = {rule.name: rule for rule in ruleset.rules}
        self.cancellers = cancellers(ruleset.rules)
        self.env = config.allowed_env()
        self.reacts_to_own_events = any(rule.allow_own_events for rule in ruleset.rules)
        """Whether any rule reacts to rulekit's own events: only then may a change cause more
        (a chain), which the daemon records before a conversation's next event from outside
        is evaluated."""
        self.reads_team = ruleset.reads_team
        """Whether any rule reads ``team``: only then does an evaluation need
        :class:`~rulekit.team.TeamFacts` (the daemon reads them from the store)."""
        self.program = loader.program
        # each rule's condition (and a timed rule's ``unless``) as one function, compiled the
        # first time it is evaluated without being explained (most rules of a large set never
        # are: the daemon explains, and the index decides most of them)
        self._matchers: dict[Rule, Callable[..., Any]] = {}
        self._unless_matchers: dict[Rule, Callable[..., Any]] = {}
        # each rule's explaining function and condition sources, once it has been explained
        self._explainers: dict[Rule, tuple[Explainer, tuple[str, ...]]] = {}
        # what each rule's evaluation prepares, once it has been evaluated (see .prepared)
        self._prepared: dict[Rule, PreparedRule] = {}
        loader.program.release_sources()
        for rule in self.rules:  # the expression trees served loading and indexing only
            forget_trees(rule)

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        config: Config | str | os.PathLike[str] | None = None,
        *,
        plugins: Plugins | None = None,
    ) -> Engine:
        """Load and compile a rules directory (or file).

        ``config`` is a loaded :class:`Config`, a path to a config file, or None for the
        default config (every installed provider offers its default channel). Raises
        :class:`rulekit.errors.ValidationErrors` listing every problem of every file.
        """
        plugins, config = plugins_and_config(config, plugins)
        with collector_paused():  # the index is built from what the load made: all alive
            loader = RuleLoader(plugins, config)
            analysis = RuleAnalysis(loader.program)  # each rule's, as it loads (memory)
            ruleset = loader.load(Path(path), each=analysis.add)
            return cls(plugins, config, ruleset, loader, analysis=analysis)

    @property
    def version(self) -> str:
        return self.ruleset.version

    def evaluate(
        self,
        event: Event,
        state: CooldownMarks | None = None,
        *,
        now: datetime | None = None,
        explain: bool = False,
        excluded: bool = False,
        team: TeamFacts | None = None,
    ) -> Plan:
        """The plan for ``event``.

        ``state`` supplies cooldown marks (None: no cooldowns, no hidden side effects — the
        state is only read; call :meth:`Plan.apply` to record the plan's marks). ``now`` is the
        time conditions see (default: the event's time, in the config's timezone). ``team`` is
        what rules reading ``team`` see (None: presence not tracked, everyone online, no open
        conversations); ``plan.team`` says what they read of it.
        Every path evaluates only the candidates the index yields (the daemon, ``rulekit test``
        and ``replay`` alike). ``explain=True`` records each candidate's trace, condition by
        condition, in ``plan.rules`` and counts the others in ``plan.excluded``;
        ``excluded=True`` also adds a trace for each of those, saying which of its conditions
        cannot hold (the dry run shows them; the daemon records the count only).
        """
        self._can_evaluate()
        seen = self._show_team(event, team)
        # each rule's conditions and simple templates get a work budget (see budget.py)
        plan: Plan = with_budget(lambda: self._evaluate(event, state, now, explain or excluded))
        if excluded:
            self._explain_excluded(plan, now)
        plan.team = dict(seen.seen) if seen is not None and seen.seen else None
        return plan

    def _can_evaluate(self) -> None:
        if not self.evaluates:
            raise RuntimeError("these rules were loaded to be known, not evaluated")

    def _show_team(self, event: Event, facts: TeamFacts | None) -> Team | None:
        """Give ``event`` the team its rules see, when they read it."""
        if not self.reads_team:
            return None
        team = Team(facts or TeamFacts(), self.config.directory, event.channel)
        event._team = team
        return team

    def _evaluate(
        self, event: Event, state: CooldownMarks | None, now: datetime | None, explain: bool
    ) -> Plan:
        now = (now or event.occurred_at).astimezone(self.config.timezone)
        env = self.env
        plan = Plan(event)
        bucket = self.index.bucket(event.channel, event.event)
        own = event.origin == "rulekit"
        # the last of as many events rulekit's own actions caused one after another as may
        # be: no rule reacts to it (rules undoing each other's change would go on for ever)
        chain_ended = own and own_chain(event.id) >= MAX_OWN_CHAIN
        if chain_ended:
            plan.add_error(
                f"event {event.id[:200]} ends a chain of {MAX_OWN_CHAIN} events rulekit's own"
                " actions caused one after another: no rule reacts to it (rules with"
                " allow_own_events that answer each other's changes?)"
            )
        recovered = event.recovered
        considered = 0  # the candidates considered before ``pending``
        if bucket.stride:
            # a coded bucket: the codes say the candidates and decide them
            codes, values, decides = bucket.select_codes(event, now, env)
            if decides and codes and not own and not recovered:
                # the leading candidates planned alike are taken together, however few: by
                # their codes, that costs less than one by one
                considered = take_coded(codes, bucket, plan, explain, self._prepared, self.index)
            rules = bucket.rules_of(codes[considered:] if considered else codes)
        else:
            rules, values = bucket.select(event, now, env)
        conversation_id = event.conversation.id
        if conversation_id:
            for rule in self.cancellers.get(event.event, ()):
                if rule.channels is None or event.channel in rule.channels:
                    plan.cancels.append(TimerCancel(rule.name, conversation_id))
        stopped_by: str | None = None
        sequence = ActionSequence(event)
        pristine = True  # the plan so far leaves the event as it is
        budget = current_budget()
        prepared_rules = self._prepared
        add_trace, add_actions = plan.rules.append, plan.actions.extend
        # a loop over the candidates (the per-candidate work of a large rule set), restarted
        # over the later candidates when an action changes the conversation
        pending: list[Rule] | None = rules
        while pending is not None:
            later: list[Rule] | None = None
            for rule in pending:
                if stopped_by is not None or (own and (chain_ended or not rule.allow_own_events)):
                    if explain:
                        reason = passed_over(stopped_by, chain_ended=chain_ended)
                        add_trace(RuleTrace(rule.name, False, reason))
                    continue
                prepared = prepared_rules.get(rule)
                if prepared is None:
                    prepared = prepared_rules[rule] = prepare(rule, self.index)
                decider = prepared.decider
                if decider is not None:
                    # the values the index read decide (see .decide): no field read again
                    try:
                        decision = decider(values)
                    except Exception:
                        decider = None  # evaluated in full below, which says what went wrong
                    else:
                        matched = decision & 1 == 1
                        constant = None if recovered else prepared.constant
                        if constant is not None or not matched:
                            # nothing more to say than the outcomes: a shared trace, and for a
                            # constant rule its shared actions
                            if explain:
                                trace = prepared.traces.get(decision)
                                if trace is None:
                                    trace = prepared.trace(decision)
                                add_trace(trace)
                            if matched and constant is not None:
                                add_actions(
                                    constant if pristine else prepared.actions_for(sequence)
                                )
                                if rule.stop:
                                    stopped_by = rule.name
                            continue
                        trace = RuleTrace(rule.name, False, "") if explain else None
                        if trace is not None:
                            trace.sources = prepared.sources
                            trace.outcomes = prepared.outcomes(decision)
                if decider is None:
                    trace = RuleTrace(rule.name, False, "") if explain else None
                    budget.renew()
                    try:
                        matched = self._matches(rule, sequence.event, now, env, trace)
                    except OverBudget as exc:
                        plan.add_error(f"rule {rule.name!r}: condition: {exc}")
                        matched = False
                        if trace is not None:
                            trace.reason = f"condition failed: {exc}"
                if not matched:
                    if trace is not None:
                        if trace.failure is not None:
                            plan.add_failure(trace)
                        add_trace(trace)
                    continue
                if rule.cooldown and conversation_id and state is not None:
                    until = state.cooldown_until(rule.name, conversation_id)
                    if until is not None and until > now:
                        if trace is not None:
                            trace.reason = (
                                f"conditions hold, but the cooldown lasts until {until.isoformat()}"
                            )
                            add_trace(trace)
                        continue
                if rule.cooldown and conversation_id:
                    until = real_time_after(now, rule.cooldown)
                    plan.cooldowns.append(Cooldown(rule.name, conversation_id, until))
                if trace is not None:
                    trace.matched = True
                    trace.reason = "conditions hold" if rule.condition else "no conditions"
                    add_trace(trace)
                if rule.timing is not None:
                    set_timer(rule, rule.timing, conversation_id, now, plan, trace, self.config)
                elif prepared.constant is not None and not recovered:  # decided in full
                    add_actions(prepared.constant if pristine else prepared.actions_for(sequence))
                else:
                    if decider is not None:  # decided without a condition's budget: its own
                        budget.renew()
                    plan_actions(rule, sequence, now, env, plan, trace, self.config)
                    pristine = sequence.event is event and not sequence.decided_later
                if rule.stop:
                    stopped_by = rule.name
                if sequence.changed:
                    # the conversation changed: the later rules are candidates (or not) by the
                    # conversation as it is now
                    sequence.changed = False
                    found, values = bucket.select(sequence.event, now, env)
                    considered += pending.index(rule) + 1
                    later = [r for r in found if r.position > rule.position]
                    break
            else:
                considered += len(pending)
            pending = later
        plan.excluded = len(bucket.rules) - considered  # each candidate was considered
        plan.final = sequence.event
        return plan

    def fire(
        self,
        rule_name: str,
        event: Event,
        due: datetime,
        now: datetime,
        *,
        explain: bool = False,
        team: TeamFacts | None = None,
    ) -> Plan:
        """The plan of a due timer: ``event`` is the triggering event as it is at fire time
        (:meth:`rulekit.event.Event.at_fire_time`), ``now`` the time it fires. A timer overdue
        by more than the rule's ``max_late`` is dropped; otherwise, unless the rule's
        ``unless:`` holds now, the rule's actions are planned. ``plan.firing`` says which.
        ``team`` as for :meth:`evaluate`, at fire time."""
        self._can_evaluate()
        seen = self._show_team(event, team)
        plan: Plan = with_budget(lambda: self._fire(rule_name, event, due, now, explain))
        plan.team = dict(seen.seen) if seen is not None and seen.seen else None
        return plan

    def _fire(
        self, rule_name: str, event: Event, due: datetime, now: datetime, explain: bool
    ) -> Plan:
        now = now.astimezone(self.config.timezone)
        plan = Plan(event)
        rule = self.by_name.get(rule_name)
        firing = plan.firing = Firing(rule_name, due, now, "fired")
        if rule is None or rule.timing is None:
            firing.outcome, firing.reason = "gone", "the rule is no longer a timed rule"
            return plan
        if (rule.channels is not None and event.channel not in rule.channels) or (
            rule.events is not None and event.event not in rule.events
        ):  # a reload changed its on: since the timer was set
            firing.outcome = "gone"
            firing.reason = (
                f"the rule no longer reacts to its triggering event ({event.channel} {event.event})"
            )
            return plan
        trace = RuleTrace(rule.name, False, "") if explain else None
        if firing.late > rule.timing.max_late:
            firing.outcome = "dropped"
            firing.reason = (
                f"{format_duration(firing.late)} late, over max_late "
                f"{format_duration(rule.timing.max_late)}"
            )
        elif rule.timing.unless is not None:
            try:
                held = self._holds(rule, rule.timing, event, now, trace)
            except ConditionFailed as failure:
                firing.outcome, firing.reason = "error", f"unless failed: {failure}"
                plan.add_error(f"rule {rule.name!r}: unless: {failure}")
            else:
                if held:
                    firing.outcome = "unless"
                    firing.reason = f"unless holds: {condition_source(rule.timing.unless)}"
        if trace is not None:
            trace.matched = firing.outcome == "fired"
            trace.reason = f"timer due {due.astimezone(self.config.timezone):%H:%M}: " + (
                firing.reason or "fired"
            )
            plan.rules.append(trace)
        if firing.outcome == "fired":
            sequence = ActionSequence(event)
            plan_actions(rule, sequence, now, self.env, plan, trace, self.config)
            plan.final = sequence.event
        return plan

    def _holds(
        self, rule: Rule, timing: Timing, event: Event, now: datetime, trace: RuleTrace | None
    ) -> bool:
        assert timing.unless is not None
        if trace is None:
            matcher = self._unless_matchers.get(rule)
            if matcher is None:
                matcher = self._unless_matchers[rule] = self._matcher(timing.unless)
            try:
                return bool(matcher(event, now, self.env))
            except OverBudget as exc:
                raise ConditionFailed(str(exc)) from None
            except Exception as exc:
                raise ConditionFailed(failure_reason(exc)) from None
        out = trace.conditions if trace is not None else []
        try:
            return explain_condition(timing.unless, event, now, self.env, out)
        except OverBudget as exc:
            raise ConditionFailed(str(exc)) from None

    def _explain_excluded(self, plan: Plan, now: datetime | None) -> None:
        """Add the trace of every rule the index excluded, in rule order."""
        if not plan.excluded:
            return
        event = plan.final
        now = (now or event.occurred_at).astimezone(self.config.timezone)
        bucket = self.index.bucket(event.channel, event.event)
        traces = {trace.name: trace for trace in plan.rules}
        ordered = []
        for rule in bucket.rules:
            trace = traces.get(rule.name)
            if trace is None:
                reason = self.index.why_not(rule, event, now, self.env)
                trace = RuleTrace(rule.name, False, f"not a candidate: {reason}")
            ordered.append(trace)
        plan.rules = ordered

    def _matches(
        self, rule: Rule, event: Event, now: datetime, env: dict[str, str], trace: RuleTrace | None
    ) -> bool:
        if rule.condition is None:
            return True
        if trace is None:
            matcher = self._matchers.get(rule)
            if matcher is None:
                matcher = self._matchers[rule] = self._matcher(rule.condition)
            try:
                return bool(matcher(event, now, env))
            except OverBudget:
                raise  # recorded as the rule's error: a budget is not a "no"
            except Exception:
                return False
        found = self._explainers.get(rule)
        if found is None:
            found = self._explainers[rule] = self._explainer(rule.condition)
        explainer, trace.sources = found
        outcomes: list[bool | None] = []
        trace.outcomes = outcomes
        try:
            result = explainer(event, now, env, outcomes)
        except OverBudget:
            raise
        except Exception as exc:
            source = trace.sources[len(outcomes)]
            trace.failure = failure_reason(exc)
            trace.reason = f"condition failed: {source!r}: {trace.failure}"
            return False
        if not result:
            trace.reason = "conditions do not hold"
        return result

    def _matcher(self, condition: Condition) -> Callable[..., Any]:
        """All of ``condition`` as one function (short-circuits, raises on error)."""
        return self.program.compile_function(matcher_code(condition))

    def _explainer(self, condition: Condition) -> tuple[Explainer, tuple[str, ...]]:
        """A rule's explaining function, compiled on first use (see :mod:`.explain`), and its
        condition sources in the order it explains them."""
        sources = tuple(leaf.source for leaf in leaves(condition))
        return compile_explainer(condition, self.program), sources
