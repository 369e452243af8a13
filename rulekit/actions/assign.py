"""``assign``: set the conversation's responsible agent (and group).

Only agents with access to the event's channel can be assigned. An explicit ``agent`` (an email,
any case) is taken as is; otherwise a strategy picks among the agents of the group (the one
named, else the conversation's, else the channel's default group) who have access:

* ``round_robin`` — in directory order, continuing where the last pick left off (the position
  lives in the store, so it survives restarts with a durable store);
* ``least_open`` — the agent with the fewest open conversations (ties: directory order);
* ``last_agent`` — the agent who last answered this client (``conversation.last_agent``), when
  they can take it; otherwise ``fallback`` (``round_robin`` or ``least_open``) picks.

Strategies skip agents at capacity (``max_open``, see :meth:`rulekit.directory.Directory.max_open`)
and, with ``only_online`` (the default once any agent has signed in to the console), agents who
are not online (:meth:`rulekit.store.base.State.presence`). When nobody fits, the conversation
goes to the group unassigned (``when_nobody: group``) or stays as it is (``leave``).

Nobody eligible is an outcome, not an error: the result says why, and the trace records it.
A dry run predicts it (:meth:`Assign.would_fail`) by the same presence and capacity rules, with
the simulation's online agents and open counts.
A change of assignee or group produces an ``assigned`` event (origin ``rulekit``), then an
``updated`` event saying what changed (see :mod:`rulekit.actions.conversation`), and records who
made it (``assigned_by``: ``rule``, or ``agent`` for the console's) and when.

A rule's call runs when its turn in the conversation's lane comes, maybe long after its event:
a person's assignment made meanwhile (:func:`kept_by_person`) stays, and the call changes
nothing; the console's assignment is made whatever came before.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field

from rulekit.actions import conversation as conversations
from rulekit.actions.base import Action, ActionContext, PlannedChange, StateChange
from rulekit.config import Config
from rulekit.directory import AgentEntry, Directory
from rulekit.errors import PermanentActionError
from rulekit.event import Conversation, Event, emitted_id
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.store.base import State


class AssignParams(StrictModel):
    agent: str | None = Field(None, description="An agent's email (case does not matter).")
    group: str | None = Field(
        None, description="A group; the channel's default group when neither is given."
    )
    strategy: Literal["round_robin", "least_open", "last_agent"] = Field(
        "round_robin", description="How to pick an agent of the group."
    )
    fallback: Literal["round_robin", "least_open"] = Field(
        "round_robin",
        description="With last_agent: how to pick when the last agent cannot take the "
        "conversation (none yet, offline, at capacity, no longer in the group).",
    )
    only_online: bool | None = Field(
        None,
        description="Pick only agents online in the console. Default: true once any agent has "
        "ever signed in to the console, false before.",
    )
    when_nobody: Literal["group", "leave"] = Field(
        "group",
        description="When no agent fits: put the conversation in the group, unassigned "
        "(group), or change nothing (leave). The reason is in the result either way.",
    )


def default_group(config: Config, channel: str) -> str | None:
    """The group new conversations of ``channel`` land in, when the config names one."""
    configured = config.channels.get(channel)
    return getattr(configured.settings, "default_group", None) if configured else None


class Assign(Action):
    """Pick a responsible agent among those with access to the channel."""

    name = "assign"
    description = "set the responsible agent (explicitly, or round-robin / least-open in a group)"
    Params = AssignParams
    changes_conversation = True
    changes = frozenset({"assignee", "group"})
    console_role = "assign"

    @classmethod
    def planned_change(  # type: ignore[override]
        cls, params: AssignParams, event: Event, config: Config
    ) -> PlannedChange:
        """An explicit agent is known when the plan is made; a strategy picks one when the
        action runs (the group is known either way). An agent without access to the channel,
        or a group none of whose agents has, is nobody when the action runs, which then
        changes nothing (:meth:`change_state`): nor does the plan."""
        conversation = event.conversation
        group = params.group or conversation.group or default_group(config, event.channel)
        if params.agent:
            agent = config.directory.get(params.agent)
            if agent is None or event.channel not in agent.channels:
                return PlannedChange(conversation)
            return PlannedChange(
                conversation.model_copy(update={"assignee": agent.email, "group": group})
            )
        if not config.directory.eligible(event.channel, group):
            return PlannedChange(conversation)
        return PlannedChange(
            conversation.model_copy(update={"group": group}), frozenset({"assignee"})
        )

    @classmethod
    def check(cls, params: AssignParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        problems: list[str] = []
        directory = config.directory
        if params.agent and "{" not in params.agent:
            agent = directory.get(params.agent)
            if agent is None:
                problems.append(f"agent {params.agent!r} is not in the agent directory")
            else:
                for channel in channels:
                    if channel not in agent.channels:
                        problems.append(f"agent {agent.email} has no access to channel {channel!r}")
        if params.group and directory.groups and params.group not in directory.groups:
            problems.append(f"unknown group {params.group!r}")
        return problems

    @classmethod
    def lint_on(cls, params: AssignParams, channels: list[str], config: Config) -> list[str]:  # type: ignore[override]
        if params.agent or (params.group and "{" in params.group):
            return []  # an explicit agent is checked by check(); a templated group per event
        problems = []
        for channel in channels:
            group = params.group or default_group(config, channel)
            eligible = config.directory.eligible(channel, group)
            if not eligible:
                problems.append(_nobody(channel, group))
            elif params.only_online and not any(agent.token_sha256 for agent in eligible):
                where = f"of group {group!r} " if group else ""
                problems.append(
                    f"no agent {where}with access to channel {channel!r} can sign in to the "
                    "console (token_sha256): only_online: true will pick nobody"
                )
        return problems

    def would_fail(self, params: AssignParams, context: ActionContext) -> str | None:  # type: ignore[override]
        channel = context.event.channel
        directory = context.config.directory
        if params.agent:
            agent = directory.get(params.agent)
            if agent is None:
                return f"agent {params.agent!r} is not in the agent directory"
            if channel not in agent.channels:
                return f"agent {agent.email} has no access to channel {channel!r}"
            return None
        group = self._group(params, context.event.conversation, context.config, channel)
        eligible = directory.eligible(channel, group)
        if not eligible:
            return _nobody(channel, group)
        online = context.online  # in a dry run: who the simulation has online
        if online is not None and params.only_online is not False:
            eligible = [agent for agent in eligible if agent.email.lower() in online]
            if not eligible:
                return _offline(channel, group) + f": {_fallback(params, group)}"
        counts = context.open_counts  # in a dry run: the simulation's open conversations
        if counts is not None:
            free, _ = _below_capacity(
                eligible, group, directory, counts, context.event.conversation
            )
            if not free:
                return _full(group) + f": {_fallback(params, group)}"
        return None

    def describe(self, params: AssignParams, context: ActionContext) -> str:  # type: ignore[override]
        if params.agent:
            return f"assign the conversation to {params.agent}"
        event = context.event
        group = self._group(params, event.conversation, context.config, event.channel)
        who = f"group {group}" if group else "any agent with access to the channel"
        how: str = params.strategy
        if params.strategy == "last_agent":
            how = f"last_agent, else {params.fallback}"
        return f"assign the conversation to an agent of {who} ({how})"

    def change_state(  # type: ignore[override]
        self, params: AssignParams, event: Event, state: State, config: Config, *, call: str = ""
    ) -> StateChange:
        """An agent's assignment (the console's): made whatever assignment came before it."""
        return self._assign(params, event, state, config, "agent", call)

    def rule_change(
        self, params: AssignParams, event: Event, state: State, config: Config, *, call: str = ""
    ) -> StateChange:
        """A rule's call (its job; the dry run's simulation): as :meth:`change_state`, except
        that a person's assignment made after ``event`` (see :func:`kept_by_person`) stays as
        it is: the call changes nothing, emits nothing, and its result says why. The check
        reads the conversation the change would write, held until the transaction ends."""
        return self._assign(params, event, state, config, "rule", call)

    def simulate(  # type: ignore[override]
        self, params: AssignParams, event: Event, state: State, config: Config, *, call: str = ""
    ) -> list[Event]:
        return self.rule_change(params, event, state, config, call=call).emitted

    def _assign(
        self,
        params: AssignParams,
        event: Event,
        state: State,
        config: Config,
        by: str,
        call: str,
    ) -> StateChange:
        if not event.conversation.id:
            raise PermanentActionError("the event has no conversation id")
        key, before = conversations.load(state, event)
        if by == "rule":
            kept = kept_by_person(before, event, config)
            if kept is not None:
                # the reason first: ``rulekit why`` shows a result's first 120 characters
                stays = {"reason": kept, "kept": True, "assigned": None, "group": before.group}
                return StateChange(before, {}, [], stays, refused=kept)
        group = self._group(params, before, config, event.channel)
        agent, reason = self._pick(params, before, group, state, config, event.channel)
        # nobody of a group that could have someone (presence or capacity decided): the
        # conversation waits in the group, unassigned, unless told to leave it as it is
        team = config.directory.eligible(event.channel, group)
        waits = not params.agent and params.when_nobody == "group" and bool(team)
        if agent is None and not waits:
            nobody = {"assigned": None, "group": group, "reason": reason}
            return StateChange(before, {}, [], nobody, refused=reason)
        assignee = agent.email if agent is not None else None
        after = before.model_copy(update={"assignee": assignee, "group": group})
        changed = conversations.changes(before, after)
        if changed:
            after = after.model_copy(update={"assigned_by": by, "assigned_at": datetime.now(UTC)})
            state.save_conversation(event.channel, key, after)
        if agent is None:  # said with an ``updated`` event, without an ``assigned`` one
            left: dict[str, Any] = {"assigned": None, "group": group, "reason": reason}
            waiting: list[Event] = []
            if changed:
                waiting = [conversations.updated_event(event, after, changed, call)]
                left.update(changed=True, updated_event_id=waiting[0].id)
            return StateChange(after, changed, waiting, left)
        result: dict[str, Any] = {"assigned": agent.email, "group": group, "changed": bool(changed)}
        if params.strategy and not params.agent:
            result["strategy"] = reason or params.strategy
        emitted: list[Event] = []
        if changed:
            assigned = self._assigned_event(event, after, call)
            updated = conversations.updated_event(event, after, changed, call)
            emitted = [assigned, updated]
            result["event_id"] = assigned.id
            result["updated_event_id"] = updated.id
        return StateChange(after, changed, emitted, result)

    async def execute(self, params: AssignParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        if context.store is None:
            raise PermanentActionError("assign needs the conversation store")
        return await conversations.execute(self, params, context, self.rule_change)

    # helpers -------------------------------------------------------------------------------
    @staticmethod
    def _group(
        params: AssignParams, conversation: Conversation, config: Config, channel: str
    ) -> str | None:
        return params.group or conversation.group or default_group(config, channel)

    def _pick(
        self,
        params: AssignParams,
        conversation: Conversation,
        group: str | None,
        state: State,
        config: Config,
        channel: str,
    ) -> tuple[AgentEntry | None, str]:
        directory = config.directory
        if params.agent:
            agent = directory.get(params.agent)
            if agent is None:
                return None, f"agent {params.agent!r} is not in the agent directory"
            if channel not in agent.channels:
                return None, f"agent {agent.email} has no access to channel {channel!r}"
            return agent, ""
        eligible = directory.eligible(channel, group)
        if not eligible:
            where = f"in group {group!r} " if group else ""
            return None, f"no agent {where}has access to channel {channel!r}"
        state.hold_assignments()  # the counts below hold until this pick is saved
        # an agent a reload removed from the directory is no one signed in
        presence = directory.presence_of_agents(state.presence())
        only_online = params.only_online if params.only_online is not None else bool(presence)
        if only_online:
            eligible = [a for a in eligible if presence.get(a.email.lower()) == "online"]
            if not eligible:
                return None, _offline(channel, group)
        counts = state.open_conversations_by_assignee()
        free, counts = _below_capacity(eligible, group, directory, counts, conversation)
        if not free:
            return None, _full(group)
        strategy: str = params.strategy
        if strategy == "last_agent":
            last = directory.get(conversation.last_agent)
            if last is not None and last in free:
                return last, ""
            strategy = params.fallback
        if strategy == "least_open":
            return min(free, key=lambda a: counts.get(a.email.lower(), 0)), _via(params)
        # round robin over every agent of the group, skipping those who cannot take it now:
        # one step of the store's counter, however many are skipped (the lock is held)
        key = f"assign:{channel}:{group or '*'}"
        everyone = directory.eligible(channel, group)
        can = {agent.email.lower() for agent in free}
        places = [index for index, agent in enumerate(everyone) if agent.email.lower() in can]
        return everyone[state.next_free_position(key, len(everyone), places)], _via(params)

    @staticmethod
    def _assigned_event(cause: Event, conversation: Conversation, call: str = "") -> Event:
        return Event(
            # stable for a redelivery, without putting the agent's email into ids and logs
            id=emitted_id(cause.id, "assigned", _digest(conversation.assignee, call)),
            channel=cause.channel,
            event="assigned",
            occurred_at=datetime.now(UTC),
            origin="rulekit",
            conversation=conversation.model_copy(deep=True),
            client=cause.client.model_copy(deep=True),
        )


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Assign)


PEOPLE = frozenset({"agent", "channel"})
"""``assigned_by`` of an assignment a person made: an agent in the console, or someone in the
channel's own app."""


def kept_by_person(stored: Conversation, event: Event, config: Config) -> str | None:
    """Why a rule's ``assign`` of ``event`` leaves the ``stored`` conversation as it is: a
    person assigned it after the event (the event's conversation carries the assignment it
    came after: another one is later); None when the assign goes ahead.

    A later assignment by a rule does not stop it (rules' assigns apply in order), nor one to
    an agent who can no longer take the conversation (removed from the directory, or without
    access to the channel since a reload): nobody would answer as them. No clock is
    compared: the service's time of the event (``occurred_at``) and the daemons' may differ."""
    by = stored.assigned_by
    if by not in PEOPLE or not stored.assignee:
        return None
    seen = event.conversation
    if (seen.assigned_by, seen.assigned_at) == (by, stored.assigned_at):
        return None  # the event came after this assignment
    agent = config.directory.get(stored.assignee)
    if agent is None or event.channel not in agent.channels:
        return None
    where = "from the console" if by == "agent" else "in the channel"
    return f"an agent assigned it {where} after the event: a person's assignment stays"


def _nobody(channel: str, group: str | None) -> str:
    where = f"in group {group!r} " if group else ""
    return f"no agent {where}has access to channel {channel!r}: the assign will pick nobody"


def _offline(channel: str, group: str | None) -> str:
    where = f"of group {group!r} " if group else ""
    return f"no agent {where}with access to channel {channel!r} is online (only_online)"


def _full(group: str | None) -> str:
    where = f"of group {group!r} " if group else ""
    return f"every agent {where}who could take it is at capacity (max_open)"


def _below_capacity(
    agents: list[AgentEntry],
    group: str | None,
    directory: Directory,
    open_counts: Mapping[str, int],
    conversation: Conversation,
) -> tuple[list[AgentEntry], dict[str, int]]:
    """The ``agents`` below their ``max_open``, and the open counts they were judged by: the
    conversation being (re)assigned does not count against its current agent. The daemon's
    pick and the dry run's prediction both decide by it."""
    counts = dict(open_counts)
    current = (conversation.assignee or "").lower()
    if current and conversation.status != "closed":
        counts[current] = counts.get(current, 0) - 1  # this one does not count
    free = [
        agent
        for agent in agents
        if (limit := directory.max_open(agent, group)) is None
        or counts.get(agent.email.lower(), 0) < limit
    ]
    return free, counts


def _fallback(params: AssignParams, group: str | None) -> str:
    if params.when_nobody == "leave":
        return "the conversation stays as it is"
    return f"the conversation waits in group {group!r}, unassigned" if group else "unassigned"


def _via(params: AssignParams) -> str:
    """What the result says picked the agent, when the last agent did not."""
    return f"{params.fallback} (fallback)" if params.strategy == "last_agent" else ""


def _digest(email: str | None, call: str = "") -> str:
    return conversations.emitted_digest((email or "").lower(), call)
