"""Saying why, for people: a condition as written, the reason an expression or an action
failed, and a condition tree explained by walking it, condition by condition (a timed rule's
``unless:`` at fire time)."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from rulekit.engine.plan import ConditionResult
from rulekit.errors import TemplateError, elide
from rulekit.event import MAX_OWN_CHAIN, Event
from rulekit.expr.budget import OverBudget
from rulekit.rules.spec import AnyOf, Condition, Leaf, NotOf


class ConditionFailed(Exception):
    """A condition raised instead of saying true or false; the message says which and why."""


def passed_over(stopped_by: str | None, *, chain_ended: bool = False) -> str:
    """Why a candidate was not evaluated: an earlier rule stopped (``stopped_by``), the event
    is rulekit's own and the rule does not react to those, or it ends the longest chain of
    rulekit's own events (``chain_ended``: :data:`~rulekit.event.MAX_OWN_CHAIN`)."""
    if stopped_by is not None:
        return f"stopped by rule {stopped_by!r}"
    if chain_ended:
        return f"own event at the end of a chain of {MAX_OWN_CHAIN}: no rule reacts to it"
    return "own event (origin rulekit); set allow_own_events: true to react"


def condition_source(condition: Condition) -> str:
    """A condition as written, for people."""
    if isinstance(condition, Leaf):
        return condition.source
    if isinstance(condition, NotOf):
        return f"not ({condition_source(condition.child)})"
    joiner = " or " if isinstance(condition, AnyOf) else " and "
    return joiner.join(f"({condition_source(child)})" for child in condition.children)


def failure_reason(exc: BaseException) -> str:
    """Why an expression, a template or an action's parameters failed, in one line of at most
    :data:`~rulekit.errors.MAX_LOCATED_ERROR` characters: an exception's message may quote a
    client's value whole (``float()`` of a 4 MB message says so in 8 MB, and each rule failing
    on it added that to the event's trace, its errors and the log)."""
    if isinstance(exc, TemplateError):
        reason = str(exc)
    elif isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")  # (a validator's own words)
        reason = f"{where}: {message}" if where else message
    else:
        reason = f"{type(exc).__name__}: {exc}"
    return " ".join(elide(reason).splitlines())


def explain_condition(
    condition: Condition, e: Event, now: datetime, env: dict[str, str], out: list[ConditionResult]
) -> bool:
    """Whether ``condition`` holds for ``e``, each condition's outcome appended to ``out``
    (those an earlier one decided as not evaluated). Raises :class:`ConditionFailed` when one
    fails, :class:`~rulekit.expr.budget.OverBudget` when the work budget runs out."""
    if isinstance(condition, Leaf):
        try:
            result = bool(condition.function(e, now, env))
        except OverBudget:
            raise
        except Exception as exc:
            out.append(ConditionResult(condition.source, None, failure_reason(exc)))
            raise ConditionFailed(f"{condition.source!r}: {failure_reason(exc)}") from None
        out.append(ConditionResult(condition.source, result))
        return result
    if isinstance(condition, NotOf):
        return not explain_condition(condition.child, e, now, env, out)
    decisive = isinstance(condition, AnyOf)
    for index, child in enumerate(condition.children):
        if explain_condition(child, e, now, env, out) is decisive:
            for rest in condition.children[index + 1 :]:
                _skipped(rest, out)
            return decisive
    return not decisive


def _skipped(condition: Condition, out: list[ConditionResult]) -> None:
    if isinstance(condition, Leaf):
        out.append(ConditionResult(condition.source, evaluated=False))
    elif isinstance(condition, NotOf):
        _skipped(condition.child, out)
    else:
        for child in condition.children:
            _skipped(child, out)
