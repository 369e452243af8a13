"""``set``: the conversation's priority and fields.

``set: {priority: high, fields: {plan: "{{ client.custom.plan }}"}}``. ``priority`` is one of
``low``, ``normal``, ``high``, ``urgent``; ``fields`` maps names (letters, digits and ``_``) to
text, numbers, booleans, or ``null`` to remove the field. When the config lists ``fields:``,
only those names (with a suggestion otherwise). The same value again changes nothing. A change
emits one ``updated`` event (see :mod:`rulekit.actions.conversation`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from rulekit.actions import conversation as conversations
from rulekit.actions.base import Action, ActionContext, PlannedChange, StateChange
from rulekit.config import Config, field_name_problem
from rulekit.errors import PermanentActionError, did_you_mean
from rulekit.event import Conversation, Event, Priority
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.store.base import State

MAX_FIELDS = 50
"""Fields one call may set, and fields a conversation may have."""
MAX_VALUE = 1000
"""Characters a field's text value may have."""

FieldValue = str | int | float | bool | None


class SetParams(StrictModel):
    model_config = {
        "json_schema_extra": {
            "anyOf": [
                {"required": ["priority"], "properties": {"priority": {"not": {"type": "null"}}}},
                {"required": ["fields"], "properties": {"fields": {"minProperties": 1}}},
            ]
        }
    }

    priority: Priority | None = Field(
        None, description="The conversation's priority: low, normal, high or urgent."
    )
    fields: dict[str, FieldValue] = Field(
        default_factory=dict,
        description="Conversation fields to set (null removes one).",
        max_length=MAX_FIELDS,
    )

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: dict[str, FieldValue]) -> dict[str, FieldValue]:
        for name, item in value.items():
            if problem := field_name_problem(name):
                raise ValueError(problem)
            if isinstance(item, str) and len(item) > MAX_VALUE:
                raise ValueError(f"field {name!r}: longer than {MAX_VALUE} characters")
        return value

    @model_validator(mode="after")
    def _something(self) -> SetParams:
        if self.priority is None and not self.fields:
            raise ValueError("set a priority or fields")
        return self


def unknown_fields(params: SetParams, config: Config, *, removed: bool = False) -> list[str]:
    """Problems with names the config's ``fields:`` list does not have (none without a list),
    of the fields set; with ``removed``, of those removed (``null``) instead. Removing a field
    outside the list is allowed: a conversation may carry one from before the list."""
    allowed = config.raw.fields
    if allowed is None:
        return []
    return [
        f"unknown field {name!r}{did_you_mean(name, allowed)} (config: fields)"
        for name, value in params.fields.items()
        if name not in allowed and (value is None) == removed
    ]


def _fields_after(
    params: SetParams, conversation: Conversation, config: Config
) -> dict[str, FieldValue]:
    allowed = config.raw.fields
    fields = dict(conversation.fields)
    for name, value in params.fields.items():
        if value is not None and allowed is not None and name not in allowed:
            continue
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return fields


def too_many_fields(params: SetParams, conversation: Conversation, config: Config) -> str | None:
    """Why the call cannot be made on ``conversation``: it would leave it more than
    :data:`MAX_FIELDS` fields (None when it can)."""
    count = len(_fields_after(params, conversation, config))
    before, hint = len(conversation.fields), "remove some first: null removes a field"
    return conversations.past_limit(count, before, MAX_FIELDS, "fields", hint)


def set_on(params: SetParams, conversation: Conversation, config: Config) -> Conversation:
    """``conversation`` with the call's priority and fields (names the config does not allow
    are left out); as it is when the call would leave it too many fields
    (:func:`too_many_fields`: the call fails, setting nothing)."""
    if too_many_fields(params, conversation, config):
        return conversation.model_copy()
    update: dict[str, Any] = {"fields": _fields_after(params, conversation, config)}
    if params.priority is not None:
        update["priority"] = params.priority
    return conversation.model_copy(update=update)


class SetState(Action):
    """Set the conversation's priority and fields."""

    name = "set"
    description = "set the conversation's priority and fields"
    Params = SetParams
    changes_conversation = True
    applied_when_recorded = True
    changes = frozenset({"priority", "fields"})
    console_role = "set"

    @classmethod
    def check(cls, params: SetParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        return unknown_fields(params, config)

    @classmethod
    def lint(cls, params: SetParams, config: Config) -> list[str]:  # type: ignore[override]
        return [
            f"{problem}: null removes it only from conversations set before the list (a typo "
            "removes nothing)"
            for problem in unknown_fields(params, config, removed=True)
        ]

    @classmethod
    def planned_change(  # type: ignore[override]
        cls, params: SetParams, event: Event, config: Config
    ) -> PlannedChange:
        return PlannedChange(set_on(params, event.conversation, config))

    def would_fail(self, params: SetParams, context: ActionContext) -> str | None:  # type: ignore[override]
        problems = unknown_fields(params, context.config)
        if full := too_many_fields(params, context.event.conversation, context.config):
            problems.append(full)
        return "; ".join(problems) or super().would_fail(params, context)

    def describe(self, params: SetParams, context: ActionContext) -> str:  # type: ignore[override]
        before = context.event.conversation
        after = set_on(params, before, context.config)
        changed = conversations.changes(before, after)
        if not changed:
            return "set on the conversation: no change"
        parts = []
        if changed["priority"]:
            parts.append(f"priority {before.priority} → {after.priority}")
        for name, values in changed["fields"].items():
            parts.append(f"{name} {values['from']!r} → {values['to']!r}")
        return "set on the conversation: " + ", ".join(parts)

    def change_state(  # type: ignore[override]
        self, params: SetParams, event: Event, state: State, config: Config, *, call: str = ""
    ) -> StateChange:
        if problems := unknown_fields(params, config):
            raise PermanentActionError("; ".join(problems))

        def change(conversation: Conversation) -> Conversation:
            if full := too_many_fields(params, conversation, config):
                raise PermanentActionError(full)
            return set_on(params, conversation, config)

        after, changed = conversations.apply(state, event, change)
        result: dict[str, Any] = {
            "priority": after.priority,
            "fields": sorted(params.fields),
            "changed": bool(changed),
        }
        return conversations.outcome(event, after, changed, result, call)

    async def execute(self, params: SetParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        return await conversations.execute(self, params, context)


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(SetState)
