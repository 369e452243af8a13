"""A key named like a dict method (``items``, ``keys``, ``values``, ``get``) is read as the key:
``conversation.fields.items`` is the field ``items`` (a conversation field, a client's custom
data), while ``conversation.fields.items()`` is still the method. Before, the read gave the
bound method, so a condition on such a field never held and a template wrote
``<built-in method items of dict object at 0x...>``.

Each case runs as a simple template (compiled to Python), as a full Jinja2 template, and as a
condition (compiled to Python, and read by the rules' index).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from scaffold import make_event

NAMES = ["items", "keys", "values", "get"]
BOTH = pytest.mark.parametrize("full", [False, True], ids=["simple", "jinja"])


def _rules(text: str, condition: str | None = None) -> str:
    rule = "- name: t\n  on: {channel: online-chat}\n"
    if condition is not None:
        rule += f"  if: {json.dumps(condition)}\n"
    return rule + f"  do:\n    - telegram: {json.dumps({'chat_id': 1, 'text': text})}\n"


def _texts(build_engine, text: str, condition: str | None = None, **event: Any) -> list[str]:
    plan = build_engine(_rules(text, condition)).evaluate(make_event(**event), explain=True)
    assert plan.errors == []
    return [action.params["text"] for action in plan]


def _wrap(template: str, full: bool) -> str:
    return "{% if true %}" + template + "{% endif %}" if full else template


@BOTH
@pytest.mark.parametrize("name", NAMES)
def test_a_field_named_like_a_method_is_read_as_the_field(build_engine, name, full) -> None:
    template = _wrap(f"{{{{ conversation.fields.{name} }}}}/{{{{ client.custom.{name} }}}}", full)
    texts = _texts(
        build_engine,
        template,
        conversation={"id": "c1", "fields": {name: "field value"}},
        client={"custom": {name: "custom value"}},
    )
    assert texts == ["field value/custom value"]


@pytest.mark.parametrize("name", NAMES)
def test_a_condition_on_such_a_field_holds(build_engine, name) -> None:
    event = {"conversation": {"id": "c1", "fields": {name: "x"}}}
    for condition in (  # indexed (an equality) and evaluated
        f"conversation.fields.{name} == 'x'",
        f"conversation.fields.{name} in ['x', 'y']",
        f"conversation.fields.{name}.startswith('x')",
        f"(conversation.fields.{name} ~ '') == 'x'",
    ):
        assert _texts(build_engine, "hit", condition, **event) == ["hit"], condition
        other = {"conversation": {"id": "c1", "fields": {name: "z"}}}
        assert _texts(build_engine, "hit", condition, **other) == [], condition


@BOTH
def test_the_methods_are_still_called_and_read_when_no_key_has_their_name(
    build_engine, full
) -> None:
    template = _wrap(
        "{{ conversation.fields.keys()|sort|join(',') }};"
        "{{ conversation.fields.items()|list|length }};"
        "{{ conversation.fields.get('plan') }};"
        "{{ conversation.fields.values()|sort|join(',') }};"
        "{{ conversation.fields.items is none }}",
        full,
    )
    event = {"conversation": {"id": "c1", "fields": {"plan": "pro", "seats": "3"}}}
    assert _texts(build_engine, template, **event) == ["plan,seats;2;pro;3,pro;False"]
    # and with a key of a method's name, a call is the method's
    event = {"conversation": {"id": "c1", "fields": {"items": "cart", "plan": "pro"}}}
    template = _wrap("{{ conversation.fields.keys()|sort|join(',') }}", full)
    assert _texts(build_engine, template, **event) == ["items,plan"]
    condition = "conversation.fields.get('items') == 'cart' and conversation.fields.items == 'cart'"
    assert _texts(build_engine, "hit", condition, **event) == ["hit"]
