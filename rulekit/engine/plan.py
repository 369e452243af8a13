"""What the engine decides for one event: the plan, its actions, and why each rule did or did not
fire."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel

from rulekit.engine.timers import Firing, TimerCancel, TimerSet
from rulekit.event import Event
from rulekit.store.base import State

OUTCOME_CODES = {True: "T", False: "F", None: "-"}
"""How a condition came out, in a stored trace: true, false, not evaluated (and ``E``: the error
that stopped the evaluation)."""
ERROR_CODE = "E"


HOLD = "conditions hold"
DO_NOT_HOLD = "conditions do not hold"
MAX_SHARED = 32_768
"""How many rule traces :meth:`RuleTrace.traced` keeps to share (then it starts over)."""
_SHARED: dict[tuple[Any, ...], dict[str, Any]] = {}


def usual_reason(matched: bool, outcomes: str) -> str:
    """The reason a rule's trace gives unless something else happened (a cooldown, a timer,
    an action not planned): stored traces leave it out."""
    if matched:
        return HOLD if outcomes else "no conditions"
    return DO_NOT_HOLD


@dataclass(slots=True)
class ConditionResult:
    """One condition's outcome: ``result`` True/False, or ``error`` (a message);
    ``evaluated`` is False when an earlier condition already decided."""

    source: str
    result: bool | None = None
    error: str | None = None
    evaluated: bool = True


class RuleTrace:
    """Why a candidate rule did or did not fire.

    ``conditions`` is built on first read from the compact form the engine records: the rule's
    condition ``sources``, one outcome per condition evaluated or skipped (``outcomes``:
    True, False or None for not evaluated) and the ``failure`` of the condition after them.
    """

    __slots__ = (
        "_conditions",
        "failure",
        "matched",
        "name",
        "outcomes",
        "reason",
        "sources",
        "text",
    )

    def __init__(
        self,
        name: str,
        matched: bool,
        reason: str,
        conditions: list[ConditionResult] | None = None,
    ) -> None:
        self.name = name
        self.matched = matched
        self.reason = reason
        self._conditions = conditions
        self.sources: Sequence[str] = ()
        self.outcomes: list[bool | None] | None = None
        self.failure: str | None = None
        self.text: str | None = None
        """:meth:`traced` as JSON text, for a trace the engine shares between the plans of
        the events that decide its rule the same way (see :mod:`.prepared`): set once, read
        only. None: encoded when stored."""

    def __repr__(self) -> str:
        return f"RuleTrace({self.name!r}, matched={self.matched}, reason={self.reason!r})"

    @property
    def conditions(self) -> list[ConditionResult]:
        """Each condition's outcome, in evaluation order."""
        if self._conditions is None:
            sources, out = self.sources, []
            for source, outcome in zip(sources, self.outcomes or (), strict=False):
                if outcome is None:
                    out.append(ConditionResult(source, evaluated=False))
                else:
                    out.append(ConditionResult(source, outcome))
            if self.failure is not None:
                out.append(ConditionResult(sources[len(out)], None, self.failure))
            self._conditions = out
        return self._conditions

    def as_dict(self) -> dict[str, Any]:
        """The trace in full: each condition a mapping (``rulekit test --json``)."""
        return {
            "name": self.name,
            "matched": self.matched,
            "trace": {
                "reason": self.reason,
                "conditions": [
                    {
                        "source": c.source,
                        "result": c.result,
                        "error": c.error,
                        "evaluated": c.evaluated,
                    }
                    for c in self.conditions
                ],
            },
        }

    def traced(self) -> dict[str, Any]:
        """:meth:`compact`, shared by the traces of a rule whose conditions came out the same
        way for the usual reason (read only: the trace of a plan is encoded, not changed)."""
        outcomes = self.outcomes
        if (
            outcomes is None
            or self.failure is not None
            or self._conditions is not None
            or self.reason != (HOLD if self.matched else DO_NOT_HOLD)
        ):
            return self.compact()
        key = (self.name, self.matched, self.sources, tuple(outcomes))
        found = _SHARED.get(key)
        if found is None:
            if len(_SHARED) >= MAX_SHARED:
                _SHARED.clear()
            found = _SHARED[key] = self.compact()
        return found

    def compact(self) -> dict[str, Any]:
        """The trace as the daemon stores it: the condition sources once, then one letter per
        condition (see :data:`OUTCOME_CODES`); ``error`` for the one that failed; ``reason``
        only when it is not the :func:`usual_reason`.
        :func:`rulekit.engine.trace.rules_of` reads it back in full."""
        out: dict[str, Any] = {"name": self.name, "matched": self.matched}
        sources: Sequence[str] = ()
        codes = ""
        if self._conditions is None:
            if self.outcomes is not None:
                codes = "".join([OUTCOME_CODES[outcome] for outcome in self.outcomes])
                sources = self.sources[: len(self.outcomes) + (self.failure is not None)]
            if self.failure is not None:
                codes += ERROR_CODE
                out["error"] = self.failure
        else:
            sources = [c.source for c in self._conditions]
            for c in self._conditions:
                if c.error is not None:
                    codes += ERROR_CODE
                    out["error"] = c.error
                else:
                    codes += OUTCOME_CODES[c.result if c.evaluated else None]
        if self.reason != usual_reason(self.matched, codes):
            out["reason"] = self.reason
        if sources:
            out["sources"] = list(sources)
        out["outcomes"] = codes
        return out


@dataclass(slots=True)
class PlannedAction:
    """One action the plan calls for: ``params`` are rendered, with defaults filled in."""

    rule: str
    action: str
    model: BaseModel = field(repr=False)
    skipped: str | None = None
    """Why the action is planned but will not run (e.g. a recovered event for a client-facing
    action); None when it runs."""
    seen: Event | None = field(default=None, repr=False, compare=False)
    """The event as this action sees it: its conversation as the earlier actions of the plan
    left it (a plan is a sequence). None: the plan's event, unchanged."""
    decided_later: frozenset[str] = frozenset()
    """Conversation attributes an earlier action of the plan decides only when it runs (an
    ``assign`` by strategy: ``assignee``)."""
    dumped: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """The parameters as JSON data when they are the same for every event (shared: read only)."""
    entry: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """:meth:`as_dict` when the parameters are the same for every event (shared: read only,
    see :meth:`traced`)."""
    text: str | None = field(default=None, repr=False, compare=False)
    """:meth:`traced` as JSON text, when the parameters are the same for every event (shared:
    read only)."""
    _params: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def params(self) -> dict[str, Any]:
        """The validated parameters as a dict (made on first read; read only: a constant
        action's planned actions are shared by the plans of the events it is planned for)."""
        if self._params is None:
            self._params = self.model.model_dump()
        return self._params

    def json_params(self) -> dict[str, Any]:
        """The parameters as JSON data."""
        return self.model.model_dump(mode="json") if self.dumped is None else self.dumped

    def traced(self) -> dict[str, Any]:
        """:meth:`as_dict`, shared when the parameters are the same for every event (read
        only: the trace of a plan is encoded, not changed)."""
        if self.entry is not None and not self.skipped:
            return self.entry
        return self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        out = {"rule": self.rule, "action": self.action, "params": self.json_params()}
        if self.skipped:
            out["skipped"] = self.skipped
        return out


class CooldownMarks(Protocol):
    """What the engine reads from the state: a rule's cooldown on a conversation. Every
    :class:`~rulekit.store.base.State` is one."""

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None: ...


@dataclass
class Cooldown:
    rule: str
    conversation_id: str
    until: datetime


MAX_ERRORS = 20
"""Errors whose text a plan keeps (its own and its rules' failed conditions together): the
first ones. A rule set where thousands of rules fail on an event (a field gone from the
provider's payload) would otherwise add a failure text of up to a kilobyte per rule, twice,
to the event's stored trace; the rest are counted (:attr:`Plan.errors_omitted`)."""
NOT_KEPT = f"(not kept: over {MAX_ERRORS} errors for this event)"


class Plan(Sequence[PlannedAction]):
    """The ordered actions for one event, and (when explained) the trace of every candidate."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self.actions: list[PlannedAction] = []
        self.rules: list[RuleTrace] = []
        self.cooldowns: list[Cooldown] = []
        self.timers: list[TimerSet] = []
        """Timers the event starts (timed rules that matched; their actions wait)."""
        self.cancels: list[TimerCancel] = []
        """Pending timers the event cancels (it is one of their rules' ``cancel_on``)."""
        self.firing: Firing | None = None
        """For the plan of a due timer (:meth:`Engine.fire`): which, when, and its outcome."""
        self.errors: list[str] = []
        """The plan's errors (at most :data:`MAX_ERRORS`; add them with :meth:`add_error`)."""
        self.errors_omitted = 0
        """Errors (the plan's, or rules' failed conditions) whose text was not kept."""
        self._failures = 0
        self.excluded = 0
        """How many rules of the event's (channel, event) the index left out (not candidates:
        a must-hold condition of theirs cannot hold); their traces are in ``rules`` only when
        asked for (``excluded=True``)."""
        self.final = event
        """The event as the whole plan leaves it (its conversation changed by the plan's
        state-changing actions)."""
        self.team: dict[str, Any] | None = None
        """What the rules read of ``team`` (:attr:`rulekit.team.Team.seen`), when they did:
        the presence and open counts the decision used."""

    def add_error(self, message: str) -> bool:
        """Record an error of the plan; False when it is only counted (over the cap)."""
        kept = self._count_error()
        if kept:
            self.errors.append(message)
        return kept

    def add_failure(self, trace: RuleTrace) -> None:
        """Count the failed condition of ``trace``, whose text goes when over the cap."""
        if not self._count_error():
            trace.failure = NOT_KEPT
            trace.reason = f"condition failed: {NOT_KEPT}"

    def _count_error(self) -> bool:
        self._failures += 1
        if self._failures <= MAX_ERRORS:
            return True
        self.errors_omitted += 1
        return False

    def __getitem__(self, index: int) -> PlannedAction:  # type: ignore[override]
        return self.actions[index]

    def __len__(self) -> int:
        return len(self.actions)

    def __iter__(self) -> Iterator[PlannedAction]:
        return iter(self.actions)

    @property
    def runnable(self) -> list[PlannedAction]:
        return [a for a in self.actions if not a.skipped]

    def apply(self, state: State) -> None:
        """Record the plan's guards (cooldown marks) in ``state``."""
        for mark in self.cooldowns:
            state.set_cooldown(mark.rule, mark.conversation_id, mark.until)
