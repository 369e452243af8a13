"""The trace stored with each event: what the engine decided and why.

The daemon records ``trace_of(plan, rules_version=…)`` with
:meth:`Journal.record_event <rulekit.store.base.Journal.record_event>`; ``rulekit why`` and
``rulekit replay`` read it back. The shape (JSON)::

    {"rules_version": "…",
     "rules": [{"name": …, "matched": bool, "trace": {"reason": …, "conditions": [
                   {"source": …, "result": bool | null, "error": str | null,
                    "evaluated": bool}]}}],
     "plan": [{"rule": …, "action": …, "params": {…}, "skipped"?: …}],
     "errors": ["…"],
     "excluded": N,
     "timers"?: [{"rule", "conversation_id", "due", "restart"}],   # timers the event set
     "cancels"?: [{"rule", "conversation_id"}],                     # timers it cancelled
     "timer"?: {"rule", "due", "fired_at", "late_seconds", "outcome", "reason"}}  # a fired timer

``rules`` holds the candidates the index yielded (evaluated with ``explain=True``); the other
rules of the event's (channel, event) are only counted in ``excluded`` — ``rulekit why
--excluded`` rebuilds their reasons from the rules when they are still the recorded version.
Readers accept missing keys (an older or partial trace), so the shape may grow.
"""

from __future__ import annotations

from typing import Any

from rulekit.engine.engine import Plan


def trace_of(plan: Plan, *, rules_version: str | None = None) -> dict[str, Any]:
    """The JSON-ready trace of ``plan`` (evaluate with ``explain=True`` for every candidate)."""
    return {
        "rules_version": rules_version,
        "rules": [rule.as_dict() for rule in plan.rules],
        "plan": [action.as_dict() for action in plan.actions],
        "errors": list(plan.errors),
        "excluded": plan.excluded,
        **({"timers": [timer.as_dict() for timer in plan.timers]} if plan.timers else {}),
        **({"cancels": [cancel.as_dict() for cancel in plan.cancels]} if plan.cancels else {}),
        **({"timer": plan.firing.as_dict()} if plan.firing is not None else {}),
    }


def rules_of(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidate rules of a stored trace, each with ``name``, ``matched``, ``reason`` and
    ``conditions``."""
    out = []
    for rule in trace.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        detail = rule.get("trace") or {}
        out.append(
            {
                "name": rule.get("name"),
                "matched": bool(rule.get("matched")),
                "reason": detail.get("reason", rule.get("reason", "")),
                "conditions": detail.get("conditions", rule.get("conditions", [])) or [],
            }
        )
    return out


def matched_rules(trace: dict[str, Any]) -> list[str]:
    """Names of the rules that fired."""
    return [rule["name"] for rule in rules_of(trace) if rule["matched"]]


def planned_actions(trace: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan's actions as recorded (skipped ones included, marked ``skipped``)."""
    actions = trace.get("plan", trace.get("actions")) or []
    return [action for action in actions if isinstance(action, dict)]


def condition_state(condition: dict[str, Any]) -> str:
    """How a condition came out, in words: ``true``, ``false``, ``not evaluated`` or the error."""
    if not condition.get("evaluated", True):
        return "not evaluated"
    if condition.get("error"):
        return f"error: {condition['error']}"
    return str(condition.get("result")).lower()
