"""The JSON Schema of the rules format, for editors (``rulekit schema``)."""

from __future__ import annotations

from typing import Any

from rulekit.event import EVENT_NAMES
from rulekit.plugins import Plugins


def rules_schema(plugins: Plugins, suite: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON Schema accepting a rules file: a list of rules, or ``{rules: [...]}``; and, given
    a test suite's schema (``{tests: [...]}``, :func:`rulekit.audit.suites.suite_schema`), a
    suite file too, as they live side by side."""
    defs: dict[str, Any] = {}
    steps = []
    for name in plugins.actions.names():
        params = plugins.actions[name].Params.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(params.pop("$defs", {}))
        defs[f"params_{name}"] = params
        steps.append(
            {
                "type": "object",
                "properties": {name: {"$ref": f"#/$defs/params_{name}"}},
                "required": [name],
                "additionalProperties": False,
            }
        )
    names = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
    condition = {"$ref": "#/$defs/condition"}
    conditions = {"type": "array", "items": condition}
    defs["condition"] = {
        "oneOf": [
            {
                "type": "string",
                "description": "A Jinja2 expression over the event (channel, event, conversation, "
                "client, message, agent, changed, trigger), now, env and team, e.g. "
                "client.country_code == 'DE' or team.online | length == 0",
            },
            _one_key("all", conditions),
            _one_key("any", conditions),
            _one_key("not", condition),
        ]
    }
    duration = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*[smhd]\s*$"}
    defs["rule"] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "description": {"type": "string"},
            "enabled": {"type": "boolean", "default": True},
            "on": {
                "type": "object",
                "properties": {
                    "channel": names,
                    "event": {
                        "oneOf": [
                            {"type": "string", "examples": list(EVENT_NAMES)},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    },
                },
                "additionalProperties": False,
            },
            "if": {"oneOf": [condition, conditions]},
            "do": {"type": "array", "minItems": 1, "items": {"oneOf": steps}},
            "stop": {"type": "boolean", "default": False},
            "cooldown": duration,
            "allow_own_events": {"type": "boolean", "default": False},
            "after": {
                "description": "Delay the actions: a duration, or business time of a calendar",
                "oneOf": [
                    duration,
                    {
                        "type": "object",
                        "properties": {"business": duration, "calendar": {"type": "string"}},
                        "required": ["business", "calendar"],
                        "additionalProperties": False,
                    },
                ],
            },
            "unless": {
                "description": "Evaluated when the timer fires; when it holds, nothing runs",
                "oneOf": [condition, conditions],
            },
            "cancel_on": {
                "description": "Events of the conversation that cancel the pending timer",
                "oneOf": [
                    {"type": "string", "examples": list(EVENT_NAMES)},
                    {"type": "array", "items": {"type": "string", "examples": list(EVENT_NAMES)}},
                ],
            },
            "restart": {"type": "boolean", "default": False},
            "max_late": duration,
        },
        "required": ["name", "on", "do"],
        "additionalProperties": False,
    }  # fmt: skip
    files: list[dict[str, Any]] = [
        {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        {
            "type": "object",
            "properties": {"rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}}},
            "required": ["rules"],
            "additionalProperties": False,
        },
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


def _one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {key: value},
        "required": [key],
        "additionalProperties": False,
    }
