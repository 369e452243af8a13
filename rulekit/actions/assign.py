"""``assign``: set the conversation's responsible agent (and group)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from rulekit.actions.base import Action, ActionContext
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry


class AssignParams(StrictModel):
    agent: str | None = Field(None, description="An agent's email (case does not matter).")
    group: str | None = Field(
        None, description="A group; the channel's default group when neither is given."
    )
    strategy: Literal["round_robin", "least_open"] = Field(
        "round_robin", description="How to pick an agent of the group."
    )

    @model_validator(mode="after")
    def _agent_or_group(self) -> AssignParams:
        if self.agent and self.group:
            # an explicit agent wins; the group is then the conversation's group
            return self
        return self


class Assign(Action):
    """Pick a responsible agent among those with access to the channel."""

    name = "assign"
    description = "set the responsible agent (explicitly, or round-robin / least-open in a group)"
    Params = AssignParams

    @classmethod
    def check(cls, params: AssignParams, channels: list[str], config) -> list[str]:  # type: ignore[override]
        problems = []
        directory = config.directory
        if params.agent:
            agent = directory.get(params.agent)
            if agent is None:
                problems.append(f"agent {params.agent!r} is not in the agent directory")
            else:
                for channel in channels:
                    if channel not in agent.channels:
                        problems.append(
                            f"agent {agent.email} has no access to channel {channel!r}"
                        )
        if params.group and directory.groups and params.group not in directory.groups:
            problems.append(f"unknown group {params.group!r}")
        return problems

    def describe(self, params: AssignParams, context: ActionContext) -> str:  # type: ignore[override]
        if params.agent:
            return f"assign the conversation to {params.agent}"
        group = params.group or "the channel's default group"
        return f"assign the conversation to an agent of {group} ({params.strategy})"


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Assign)
