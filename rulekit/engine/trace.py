"""The trace stored with each event: what the engine decided and why.

The daemon records ``trace_of(plan, rules_version=…)`` with
:meth:`Journal.record_event <rulekit.store.base.Journal.record_event>` — as
:func:`encoded_trace`, the same JSON text joined from parts the engine keeps encoded;
``rulekit why`` and ``rulekit replay`` read it back. The shape (JSON)::

    {"rules_version": "…",
     "rules": [{"name": …, "matched": bool, "reason"?: …,
                "sources"?: ["…"], "outcomes": "TF-E", "error"?: "…"}],
     "plan": [{"rule": …, "action": …, "params": {…}, "skipped"?: …}],
     "errors": ["…"],                     # the first 20 (its own and rules' failures)
     "errors_omitted"?: N,                 # how many more there were (texts not kept)
     "excluded": N,
     "timers"?: [{"rule", "conversation_id", "due", "restart"}],   # timers the event set
     "cancels"?: [{"rule", "conversation_id"}],                     # timers it cancelled
     "timer"?: {"rule", "due", "fired_at", "late_seconds", "outcome", "reason"},  # a fired timer
     "team"?: {"tracked", "online"?, "online_in"?: {group: [...]}, "open"?: {email: n}}}
                                          # what conditions and templates read of `team`

Each rule's conditions are its condition ``sources`` and one letter per condition in
``outcomes``: ``T`` true, ``F`` false, ``-`` not evaluated, ``E`` failed (with ``error``, the
message) — a fraction of the size and encoding time of a mapping per condition. ``reason`` is
left out when it is the usual one (:func:`~rulekit.engine.plan.usual_reason`).
:func:`rules_of` reads either this or the earlier shape (``"trace": {"reason": …, "conditions":
[{"source", "result", "error", "evaluated"}]}``) and gives the conditions in full.

``rules`` holds the candidates the index yielded (evaluated with ``explain=True``); the other
rules of the event's (channel, event) are only counted in ``excluded`` — ``rulekit why
--excluded`` rebuilds their reasons from the rules when they are still the recorded version.
Readers accept missing keys (an older or partial trace), so the shape may grow.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from itertools import compress
from operator import attrgetter
from typing import Any, cast

from rulekit.engine.plan import Plan, usual_reason
from rulekit.store.codec import EncodedTrace, fast_json, trace_json


def trace_of(plan: Plan, *, rules_version: str | None = None) -> dict[str, Any]:
    """The JSON-ready trace of ``plan`` (evaluate with ``explain=True`` for every candidate)."""
    return {
        "rules_version": rules_version,
        "rules": [rule.traced() for rule in plan.rules],
        "plan": [action.traced() for action in plan.actions],
        **_rest(plan),
    }


def _rest(plan: Plan) -> dict[str, Any]:
    """The trace's keys after ``plan``."""
    return {
        "errors": list(plan.errors),
        **({"errors_omitted": plan.errors_omitted} if plan.errors_omitted else {}),
        "excluded": plan.excluded,
        **({"timers": [timer.as_dict() for timer in plan.timers]} if plan.timers else {}),
        **({"cancels": [cancel.as_dict() for cancel in plan.cancels]} if plan.cancels else {}),
        **({"timer": plan.firing.as_dict()} if plan.firing is not None else {}),
        **({"team": plan.team} if plan.team else {}),
    }


_name, _matched, _text = attrgetter("name"), attrgetter("matched"), attrgetter("text")


def encoded_trace(plan: Plan, *, rules_version: str | None = None) -> EncodedTrace:
    """:func:`trace_of` as the store writes it (the text of ``trace_json(trace_of(plan))``),
    with the names of the rules that fired: what the daemon records. The shared parts of a
    plan (see :mod:`rulekit.engine.prepared`) come encoded already; the text is joined from
    theirs and the encoding of the rest."""
    # map and compress: the per-rule work of a plan with many candidates stays in C
    matched = list(compress(map(_name, plan.rules), map(_matched, plan.rules)))
    text = _joined(plan, rules_version)
    if text is None:  # a part msgspec refuses: the whole as trace_json writes it
        text = trace_json(trace_of(plan, rules_version=rules_version))
    return EncodedTrace(text, matched)


def _joined(plan: Plan, rules_version: str | None) -> str | None:
    # most parts of a large plan come encoded: their texts first, the others encoded after
    rules = list(map(_text, plan.rules))
    if None in rules:
        rules = [rule.text or fast_json(rule.traced()) for rule in plan.rules]
    actions = list(map(_text, plan.actions))
    if None in actions:
        actions = [action.text or fast_json(action.traced()) for action in plan.actions]
    head = _head(rules_version)
    tail = fast_json(_rest(plan))
    if head is None or tail is None or None in rules or None in actions:
        return None
    # '{"rules_version":…}' and '{"errors":…}' around the two lists
    joined_rules = ",".join(cast(list[str], rules))
    joined_actions = ",".join(cast(list[str], actions))
    return f'{head[:-1]},"rules":[{joined_rules}],"plan":[{joined_actions}],{tail[1:]}'


@functools.lru_cache(maxsize=8)
def _head(rules_version: str | None) -> str | None:
    """The trace's first key, encoded (the same for every event of a rules version)."""
    return fast_json({"rules_version": rules_version})


def rules_of(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidate rules of a stored trace, each with ``name``, ``matched``, ``reason`` and
    ``conditions``."""
    out = []
    for rule in trace.get("rules") or []:
        if not isinstance(rule, dict):
            continue
        detail = rule.get("trace") or {}
        matched = bool(rule.get("matched"))
        if "outcomes" in rule:  # the compact shape
            conditions = _conditions(rule)
            reason = rule.get("reason", usual_reason(matched, str(rule["outcomes"])))
        else:
            conditions = detail.get("conditions", rule.get("conditions", [])) or []
            reason = detail.get("reason", rule.get("reason", ""))
        out.append(
            {
                "name": rule.get("name"),
                "matched": matched,
                "reason": reason,
                "conditions": conditions,
            }
        )
    return out


def in_full(trace: dict[str, Any]) -> dict[str, Any]:
    """``trace`` with each rule in the full shape (``{"name", "matched", "trace": {"reason",
    "conditions": [{"source", "result", "error", "evaluated"}]}}``), for people and tools
    reading a recorded trace (``rulekit why --json``)."""
    if not isinstance(trace.get("rules"), list):
        return trace
    rules = [
        {
            "name": rule["name"],
            "matched": rule["matched"],
            "trace": {"reason": rule["reason"], "conditions": rule["conditions"]},
        }
        for rule in rules_of(trace)
    ]
    return {**trace, "rules": rules}


_RESULTS = {"T": True, "F": False}


def _conditions(rule: dict[str, Any]) -> list[dict[str, Any]]:
    """A compact rule trace's conditions in full."""
    out = []
    sources = rule.get("sources") or []
    for source, code in zip(sources, str(rule.get("outcomes") or ""), strict=False):
        out.append(
            {
                "source": source,
                "result": _RESULTS.get(code),
                "error": rule.get("error") if code == "E" else None,
                "evaluated": code != "-",
            }
        )
    return out


def matched_rules(trace: Mapping[str, Any]) -> list[str]:
    """Names of the rules that fired."""
    if isinstance(trace, EncodedTrace):
        return list(trace.matched)
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
