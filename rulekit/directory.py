"""The agent directory: the agents and groups the config lists (``agents:``, ``groups:``),
found by email whatever its case, and who may handle which channel and how many open
conversations each may hold.

Providers match a service's agents to it (an agent's name and whether rulekit knows them),
``assign`` picks from it, the console signs agents in with it, and rules see it as the team
(:mod:`rulekit.team`).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field, field_validator

from rulekit.models import StrictModel


class AgentEntry(StrictModel):
    """An agent in the directory. ``channels`` lists the channels the agent may handle: a new
    channel gives nobody access until it is listed here."""

    email: str
    name: str | None = None
    groups: list[str] = Field(default_factory=list)
    channels: list[str] = Field(default_factory=list)
    token_sha256: str | None = None
    max_open: int | None = Field(
        None,
        ge=0,
        description="Open conversations this agent may hold before assignment strategies skip "
        "them (0: strategies never pick them); the default is their group's max_open "
        "(unlimited when neither says).",
    )

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"{value!r} is not an email address")
        return value.strip()


class GroupEntry(StrictModel):
    """A group of agents (e.g. ``support``)."""

    description: str | None = None
    max_open: int | None = Field(
        None,
        ge=0,
        description="The default max_open of the group's agents (an agent's own value wins).",
    )


class Directory:
    """The agent directory: agents by email (case-insensitive), and who may handle what."""

    def __init__(
        self,
        agents: list[AgentEntry],
        groups: list[str],
        group_limits: dict[str, int] | None = None,
    ) -> None:
        self.agents = agents
        self.groups = groups
        self.group_limits = group_limits or {}
        """``groups.<name>.max_open``, by group (groups without one are not listed)."""
        self._by_email = {agent.email.lower(): agent for agent in agents}

    def max_open(self, agent: AgentEntry, group: str | None = None) -> int | None:
        """How many open conversations ``agent`` may hold (None: no limit): their own
        ``max_open``, else that of ``group`` when they belong to it, else the smallest of
        their groups' limits."""
        if agent.max_open is not None:
            return agent.max_open
        if group is not None and group in agent.groups and group in self.group_limits:
            return self.group_limits[group]
        limits = [self.group_limits[g] for g in agent.groups if g in self.group_limits]
        return min(limits) if limits else None

    def get(self, email: str | None) -> AgentEntry | None:
        """The agent with this email, whatever its case."""
        return self._by_email.get(email.lower()) if email else None

    def presence_of_agents(self, presence: Mapping[str, str]) -> dict[str, str]:
        """The store's ``presence`` (by lower-cased email) of this directory's agents only: an
        agent a reload removed signed in once, yet is nobody ``assign`` or ``team`` may count
        on, nor a sign that presence is tracked."""
        return {
            email: status for email, status in presence.items() if email.lower() in self._by_email
        }

    def eligible(self, channel: str, group: str | None = None) -> list[AgentEntry]:
        """Agents who may handle ``channel`` (and belong to ``group`` when given), in file order."""
        return [
            agent
            for agent in self.agents
            if channel in agent.channels and (group is None or group in agent.groups)
        ]
