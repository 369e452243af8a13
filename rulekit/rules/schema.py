"""The JSON Schema of the rules format, for editors (``rulekit schema``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from rulekit.event import EVENT_NAMES
from rulekit.models import DURATION_SCHEMA
from rulekit.plugins import Plugins
from rulekit.registry import model_schema

TIMED_ONLY = ("unless", "cancel_on", "restart", "max_late")
"""Rule keys that belong to a timed rule (one with ``after:``)."""
TEMPLATE = {
    "type": "string",
    "pattern": r"\{\{|\{%|\{#",
    "description": "a template, checked when it is rendered",
}


def rules_schema(plugins: Plugins, suite: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON Schema accepting a rules file: a list of rules, or ``{rules: [...]}``; and, given
    a test suite's schema (``{tests: [...]}``, :func:`rulekit.audit.suites.suite_schema`), a
    suite file too, as they live side by side."""
    defs: dict[str, Any] = {}
    steps = []
    for name in plugins.actions.names():
        entry = plugins.actions.entries[name]
        params = model_schema(entry, "action", entry.value.Params, ref_template="#/$defs/{model}")
        defs.update(params.pop("$defs", {}))
        defs[f"params_{name}"] = _templates_allowed(params)
        step: dict[str, Any] = {"$ref": f"#/$defs/params_{name}"}
        if _takes_defaults(plugins.actions[name].Params):  # `play_sound:` alone
            step = {"anyOf": [step, {"type": "null"}]}
        steps.append(
            {
                "type": "object",
                "properties": {name: step},
                "required": [name],
                "additionalProperties": False,
            }
        )
    names = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    condition = {"$ref": "#/$defs/condition"}
    conditions = {"type": "array", "items": condition, "minItems": 1}
    defs["condition"] = {
        "oneOf": [
            {
                "type": "string",
                "minLength": 1,
                "description": "A Jinja2 expression over the event (channel, event, conversation, "
                "client, message, agent, changed, trigger), now, env and team, e.g. "
                "client.country_code == 'DE' or team.online | length == 0",
            },
            conditions,  # a list inside a list: all of them, as at the top
            _one_key("all", conditions),
            _one_key("any", conditions),
            _one_key("not", condition),
        ]
    }
    duration = DURATION_SCHEMA
    defs["rule"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "pattern": "^[^@]"},
            "description": {"type": ["string", "null"]},
            "enabled": {"type": "boolean", "default": True},
            "on": {
                "type": "object",
                "properties": {
                    "channel": _nullable(names),
                    "event": {
                        "oneOf": [
                            {"type": "string", "examples": list(EVENT_NAMES)},
                            {"type": "array", "items": {"type": "string"}},
                            {"type": "null"},
                        ]
                    },
                },
                "additionalProperties": False,
            },
            "if": _nullable(condition),
            "do": {"type": "array", "minItems": 1, "items": {"oneOf": steps}},
            "stop": {"type": "boolean", "default": False},
            "cooldown": _nullable(duration),
            "allow_own_events": {"type": "boolean", "default": False},
            "after": {
                "description": "Delay the actions: a duration, or business time of a calendar",
                "oneOf": [
                    duration,
                    {
                        "type": "object",
                        "properties": {
                            "business": duration,
                            "calendar": {"type": "string", "minLength": 1},
                        },
                        "required": ["business", "calendar"],
                        "additionalProperties": False,
                    },
                    {"type": "null"},
                ],
            },
            "unless": {
                "description": "Evaluated when the timer fires; when it holds, nothing runs",
                "oneOf": [condition, {"type": "null"}],
            },
            "cancel_on": {
                "description": "Events of the conversation that cancel the pending timer",
                "oneOf": [
                    {"type": "string", "examples": list(EVENT_NAMES)},
                    {"type": "array", "items": {"type": "string", "examples": list(EVENT_NAMES)}},
                    {"type": "null"},
                ],
            },
            "restart": {"type": ["boolean", "null"], "default": False},
            "max_late": _nullable(duration),
        },
        "required": ["name", "on", "do"],
        # what only a timed rule has: the loader refuses it without `after:`
        "dependentSchemas": {
            key: {
                "anyOf": [
                    {"properties": {key: {"type": "null"}}},
                    {"required": ["after"], "properties": {"after": {"not": {"type": "null"}}}},
                ]
            }
            for key in TIMED_ONLY
        },
        "additionalProperties": False,
    }  # fmt: skip
    rules = {"type": "array", "items": {"$ref": "#/$defs/rule"}}
    files: list[dict[str, Any]] = [
        rules,
        {
            "type": "object",
            "properties": {"rules": _nullable(rules)},
            "required": ["rules"],
            "additionalProperties": False,
        },
        {"type": "null", "description": "an empty file: no rules"},
    ]
    if suite is not None:
        suite = dict(suite)
        defs.update(suite.pop("$defs", {}))
        defs["suite"] = suite
        files.append({"$ref": "#/$defs/suite"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rulekit rules file",
        "oneOf": files,
        "$defs": defs,
    }


def _takes_defaults(model: type[BaseModel]) -> bool:
    """Whether an action's parameters may all be left out (the loader reads ``action:`` alone
    as ``action: {}``)."""
    try:
        model.model_validate({})
    except Exception:  # ValidationError, or a plugin's validator that fails otherwise
        return False
    return True


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema``, or null (a key written without a value: the loader takes it as left out)."""
    return {"anyOf": [schema, {"type": "null"}]}


def _templates_allowed(params: dict[str, Any]) -> dict[str, Any]:
    """An action's parameters, where a template may also stand for each one that is not text:
    the loader leaves a templated value to be checked when it is rendered
    (``message_thread_id: "{{ env.TOPIC }}"``). Text parameters stay as they are (an
    enumeration keeps its completion; a template there is an editor's warning only)."""
    properties = {}
    for name, schema in params.get("properties", {}).items():
        if schema.get("type") != "string" and schema.get("x-template", True):
            notes = {key: schema[key] for key in _NOTES if key in schema}
            core = {key: value for key, value in schema.items() if key not in _NOTES}
            schema = {**notes, "anyOf": [core, TEMPLATE]}
        properties[name] = schema
    return {**params, "properties": properties}


_NOTES = ("title", "description", "default", "examples")


def _one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: value},
        "required": [key],
        "additionalProperties": False,
    }
