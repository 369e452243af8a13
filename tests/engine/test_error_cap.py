"""An event's errors are capped: the first :data:`MAX_ERRORS` keep their text, the rest are
counted, whether they are the plan's (an action's parameters that fail) or a rule's failed
condition. Thousands of rules failing on one event (a field gone from a provider's payload)
must not add a kilobyte or two each to its stored trace."""

from __future__ import annotations

import json

from scaffold import make_event

from rulekit.engine.plan import MAX_ERRORS, NOT_KEPT
from rulekit.engine.trace import encoded_trace

FAILING = 400
LONG = "x" * 600  # quoted by each failure's message


def _rules() -> str:
    conditions = [
        f"""
        - name: condition {n}
          on: {{channel: online-chat}}
          if: "conversation.assignee.domain == '{LONG}'"
          do: [{{play_sound: {{sound: bell}}}}]
        """
        for n in range(FAILING)
    ]
    templates = [
        f"""
        - name: template {n}
          on: {{channel: online-chat}}
          do: [{{autoreply: {{text: "{{{{ message.text.upper() }}}} {LONG}"}}}}]
        """
        for n in range(FAILING)
    ]
    return "".join(conditions + templates)


def test_an_event_keeps_the_first_errors_and_counts_the_rest(build_engine) -> None:
    engine = build_engine(_rules())
    plan = engine.evaluate(make_event(event="closed"), explain=True)  # no assignee, no text
    failed = [rule for rule in plan.rules if rule.failure is not None]
    assert len(failed) == FAILING
    assert sum(rule.failure != NOT_KEPT for rule in failed) == MAX_ERRORS
    assert plan.errors == []  # the conditions' failures came first and took the texts kept
    assert plan.errors_omitted == 2 * FAILING - MAX_ERRORS

    trace = json.loads(encoded_trace(plan, rules_version="v").text)
    assert trace["errors_omitted"] == 2 * FAILING - MAX_ERRORS
    # a failing rule past the cap adds its name, outcome and condition (the rule's own text,
    # as in any event's trace), not its failure's text
    told = [{k: v for k, v in rule.items() if k != "sources"} for rule in trace["rules"]]
    assert sum(LONG in json.dumps(rule) for rule in told) == MAX_ERRORS
    assert len(json.dumps(told)) < MAX_ERRORS * 3 * 1_000 + 2 * FAILING * 150


def test_under_the_cap_every_error_is_kept(build_engine) -> None:
    engine = build_engine(
        """
        - name: fragile
          on: {channel: online-chat}
          do: [{autoreply: {text: "{{ message.text.upper() }}"}}]
        """
    )
    plan = engine.evaluate(make_event(event="closed"), explain=True)
    assert len(plan.errors) == 1 and plan.errors_omitted == 0
    assert "errors_omitted" not in json.loads(encoded_trace(plan).text)
