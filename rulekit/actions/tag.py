"""``tag``: add tags to the conversation and remove others.

``tag: {add: [vip], remove: [new]}``. Names are 1 to 64 characters, at most 50 on a
conversation (a call that would make more fails: no tag is dropped); when the config lists
``tags:``, only those (a literal name outside the list is an error when the rules load, with a
suggestion; a templated one fails the call). Tags keep the order they were added in; adding a
tag the conversation has, or removing one it has not, changes nothing. A change emits one
``updated`` event (see :mod:`rulekit.actions.conversation`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from rulekit.actions import conversation as conversations
from rulekit.actions.base import Action, ActionContext, PlannedChange, StateChange
from rulekit.config import Config, tag_name, tag_problem
from rulekit.errors import PermanentActionError, did_you_mean
from rulekit.event import Conversation, Event
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.store.base import State

MAX_TAGS = 50
"""Tags one call may name, and tags a conversation may have."""


class TagParams(StrictModel):
    model_config = {
        "json_schema_extra": {
            "anyOf": [
                {"required": ["add"], "properties": {"add": {"minItems": 1}}},
                {"required": ["remove"], "properties": {"remove": {"minItems": 1}}},
            ]
        }
    }

    add: list[str] = Field(default_factory=list, description="Tags to add.", max_length=MAX_TAGS)
    remove: list[str] = Field(
        default_factory=list, description="Tags to remove.", max_length=MAX_TAGS
    )

    @field_validator("add", "remove")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [tag_name(tag) for tag in value]
        for tag in names:
            if problem := tag_problem(tag):
                raise ValueError(problem)
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _something(self) -> TagParams:
        if not self.add and not self.remove:
            raise ValueError("name tags to add or to remove")
        both = [tag for tag in self.add if tag in self.remove]
        if both:  # (which should win? a call says one or the other)
            raise ValueError(f"tag {both[0]!r} is both added and removed")
        return self


def unknown_tags(params: TagParams, config: Config, *, literal_only: bool) -> list[str]:
    """Problems with names the config's ``tags:`` list does not have (none without a list):
    of the tags to add, and, for the names a rule writes (``literal_only``: checked when the
    rules load, where a name to remove that is not in the list is a typo), of those to remove.
    When a call runs, removing a tag outside the list is allowed: a conversation may carry one
    from before the list (an agent cleaning it up in the console was refused)."""
    allowed = config.raw.tags
    if allowed is None:
        return []
    problems = []
    for tag in (*params.add, *(params.remove if literal_only else ())):
        if literal_only and "{" in tag:
            continue
        if tag not in allowed:
            problems.append(f"unknown tag {tag!r}{did_you_mean(tag, allowed)} (config: tags)")
    return problems


def _tags_after(params: TagParams, conversation: Conversation, config: Config) -> list[str]:
    allowed = config.raw.tags
    tags = [tag for tag in conversation.tags if tag not in params.remove]
    for tag in params.add:
        if tag not in tags and tag not in params.remove and (allowed is None or tag in allowed):
            tags.append(tag)
    return tags


def too_many_tags(params: TagParams, conversation: Conversation, config: Config) -> str | None:
    """Why the call cannot be made on ``conversation``: it would leave it more than
    :data:`MAX_TAGS` tags (None when it can)."""
    count = len(_tags_after(params, conversation, config))
    before = len(conversation.tags)
    return conversations.past_limit(count, before, MAX_TAGS, "tags", "remove some first")


def tagged(params: TagParams, conversation: Conversation, config: Config) -> Conversation:
    """``conversation`` with the call's tags added and removed (names the config does not
    allow are left out); as it is when the call would leave it too many
    (:func:`too_many_tags`: the call fails, no tag is dropped to make room)."""
    if too_many_tags(params, conversation, config):
        return conversation.model_copy()
    return conversation.model_copy(update={"tags": _tags_after(params, conversation, config)})


class Tag(Action):
    """Add and remove conversation tags."""

    name = "tag"
    description = "add tags to the conversation, remove others"
    Params = TagParams
    changes_conversation = True
    applied_when_recorded = True
    changes = frozenset({"tags"})
    console_role = "tags"

    @classmethod
    def check(cls, params: TagParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        return unknown_tags(params, config, literal_only=True)

    @classmethod
    def planned_change(  # type: ignore[override]
        cls, params: TagParams, event: Event, config: Config
    ) -> PlannedChange:
        return PlannedChange(tagged(params, event.conversation, config))

    def would_fail(self, params: TagParams, context: ActionContext) -> str | None:  # type: ignore[override]
        problems = unknown_tags(params, context.config, literal_only=False)
        if full := too_many_tags(params, context.event.conversation, context.config):
            problems.append(full)
        return "; ".join(problems) or super().would_fail(params, context)

    def describe(self, params: TagParams, context: ActionContext) -> str:  # type: ignore[override]
        parts = []
        if params.add:
            parts.append("add " + ", ".join(params.add))
        if params.remove:
            parts.append("remove " + ", ".join(params.remove))
        before = context.event.conversation.tags
        after = tagged(params, context.event.conversation, context.config).tags
        outcome = f"tags {before} → {after}" if before != after else "no change"
        return f"tag the conversation: {'; '.join(parts)} ({outcome})"

    def change_state(  # type: ignore[override]
        self, params: TagParams, event: Event, state: State, config: Config, *, call: str = ""
    ) -> StateChange:
        if problems := unknown_tags(params, config, literal_only=False):
            raise PermanentActionError("; ".join(problems))

        def change(conversation: Conversation) -> Conversation:
            if full := too_many_tags(params, conversation, config):
                raise PermanentActionError(full)
            return tagged(params, conversation, config)

        after, changed = conversations.apply(state, event, change)
        result: dict[str, Any] = {"tags": list(after.tags), "changed": bool(changed)}
        return conversations.outcome(event, after, changed, result, call)

    async def execute(self, params: TagParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        return await conversations.execute(self, params, context)


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Tag)
