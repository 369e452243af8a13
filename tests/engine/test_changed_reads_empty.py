"""What did not change reads empty, on every event: ``changed.priority.to`` is none on a
``message`` event, and ``changed.fields.plan.to`` is none on an ``updated`` event that changed
another field, in conditions (indexed or not) and templates (simple or full Jinja2) alike.
Before, both were errors ("cannot read 'to' of None"): a rule listening to ``updated`` and
other events, or reading a field that did not change, failed on every such event."""

from __future__ import annotations

import pytest
from scaffold import make_event

RULES = """
- name: reads changed
  on: {channel: online-chat}
  if: CONDITION
  do:
    - telegram:
        chat_id: 1
        text: >-
          {{ changed.priority.to }}|{{ changed.fields.plan.to }}|{{ changed.tags.added|length
          }}|{% if changed %}some{% else %}none{% endif %}
    - telegram: {chat_id: 2, text: "{{ changed.fields.plan.to }}/{{ changed.priority.to }}"}
"""

CONDITIONS = [
    "changed.priority.to == 'high' or not changed.priority.to",
    "changed.fields.plan.to != 'gold'",
    "changed.tags.added|length == 0",
    "changed.fields.plan.from is none and changed.assignee.to is none",
    "not changed.fields.get('plan')",
]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_what_did_not_change_reads_empty_on_every_event(build_engine, condition) -> None:
    engine = build_engine(RULES.replace("CONDITION", f'"{condition}"'))
    message = make_event(event="message", conversation={"id": "c1"})
    plan = engine.evaluate(message, explain=True)
    assert plan.errors == [] and [r.reason for r in plan.rules] == ["conditions hold"]
    assert plan[0].params["text"] == "||0|none"  # (and changed itself is empty: false)
    assert plan[1].params["text"] == "/"
    updated = make_event(
        event="updated",
        origin="console",
        conversation={"id": "c1"},
        changed={
            "priority": {"from": None, "to": "high"},
            "fields": {"seats": {"from": 1, "to": 2}},
        },
    )
    plan = engine.evaluate(updated, explain=True)
    assert plan.errors == [] and [r.reason for r in plan.rules] == ["conditions hold"]
    assert plan[0].params["text"] == "high||0|some"
    assert plan[1].params["text"] == "/high"


def test_what_changed_reads_as_it_did(build_engine) -> None:
    engine = build_engine(RULES.replace("CONDITION", "\"changed.fields.plan.to == 'gold'\""))
    updated = make_event(
        event="updated",
        origin="console",
        conversation={"id": "c1"},
        changed={"fields": {"plan": {"from": None, "to": "gold"}}, "tags": {"added": ["vip"]}},
    )
    plan = engine.evaluate(updated, explain=True)
    assert plan.errors == []
    assert plan[0].params["text"] == "|gold|1|some"
    assert plan[1].params["text"] == "gold/"
