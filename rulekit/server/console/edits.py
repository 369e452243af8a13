"""What agents change of a conversation's state from the console: its assignee (and group),
its tags and its priority.

Each change is made by the installed action of the matching
:attr:`~rulekit.actions.base.Action.console_role` (``assign``, ``tags``, ``set``: the built-in
``assign``, ``tag`` and ``set``), through its :meth:`~rulekit.actions.base.Action.change_state`
— the same code, checks and ``updated`` event as when a rule makes it — with the agent's
request as the cause: the events it emits carry ``origin: console`` and the agent. Nothing is
sent to the channel's service (Chatra's API has no assignments, tags or priorities); an
assignee is who the channel's replies are then sent as.

Like a webhook's events, the change is made in a transaction that is rolled back, the events
are evaluated by the rules with no transaction open, and one transaction then makes the change
again (checking the conversation did not change meanwhile, else all starts over) and records
the events with their traces and jobs (:mod:`rulekit.runtime.planning`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from rulekit.errors import PermanentActionError, StoreUnavailable
from rulekit.event import Event
from rulekit.runtime import planning
from rulekit.runtime.logs import log_id
from rulekit.runtime.planning import Processed, StateChanged
from rulekit.runtime.reporting import report
from rulekit.runtime.worker import Evaluation, Refusal
from rulekit.server.console.changes import Changes, Found, change_token, console_event
from rulekit.server.console.conversations import MAX_THREAD_TEXT
from rulekit.server.console.journal import shortened
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.team import TeamView
from rulekit.server.console.workspace import ApiError, Workspace, audit, ok, store_unavailable
from rulekit.store.base import JournaledState, State

if TYPE_CHECKING:
    from rulekit.actions.base import Action, StateChange
    from rulekit.config import Config

ROLES = {
    "assign": ("assign", "assigned a conversation"),
    "tags": ("tags", "tagged a conversation"),
    "priority": ("set", "set a conversation's priority"),
}
"""Each endpoint's action (by console role) and audit line."""


class ConversationEdits(Changes):
    """Everything agents change from one daemon's console: replies and client data
    (:class:`~rulekit.server.console.changes.Changes`), and the conversation's assignee, tags
    and priority."""

    async def assign(
        self,
        workspace: Workspace,
        viewer: Viewer,
        conversation_id: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> Response:
        """``POST .../assign {agent?, group?, strategy?}``: as the ``assign`` action."""
        return await self._edit(workspace, viewer, conversation_id, "assign", body, idempotency_key)

    async def tags(
        self,
        workspace: Workspace,
        viewer: Viewer,
        conversation_id: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> Response:
        """``POST .../tags {add?, remove?}``: as the ``tag`` action."""
        return await self._edit(workspace, viewer, conversation_id, "tags", body, idempotency_key)

    async def priority(
        self,
        workspace: Workspace,
        viewer: Viewer,
        conversation_id: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> Response:
        """``POST .../priority {priority}``: as the ``set`` action with a priority."""
        return await self._edit(
            workspace, viewer, conversation_id, "priority", body, idempotency_key
        )

    # shared ----------------------------------------------------------------------------------
    async def _edit(
        self,
        workspace: Workspace,
        viewer: Viewer,
        conversation_id: str,
        endpoint: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> Response:
        role, what = ROLES[endpoint]
        await self._found(workspace, viewer, conversation_id)  # 404 before anything else
        if endpoint == "assign" and not body.get("agent") and not body.get("group"):
            raise ApiError(400, "name an agent (their email) or a group")
        if endpoint == "priority" and set(body) != {"priority"}:
            raise ApiError(400, 'send {"priority": "low" | "normal" | "high" | "urgent"}')
        action = self._state_action(role)
        try:
            params = action.Params.model_validate(body)
        except ValidationError as exc:
            raise ApiError(400, _problems(exc)) from None
        token = change_token(viewer, idempotency_key, "POST", endpoint, conversation_id, body)
        commit, evaluator = self.runtime.commit, self.runtime.evaluator
        if commit is None or evaluator is None:
            raise ApiError(503, "the daemon is not running")
        try:
            while True:
                found = await self._found(workspace, viewer, conversation_id)
                cause = console_event(
                    viewer, token, found.channel, "updated", found.conversation, found.client
                )
                made = _Made()
                parse = _maker(action, params, cause, found, self.runtime.snapshot.config, made)
                try:
                    prepared = await anyio.to_thread.run_sync(
                        partial(planning.prepare, team=evaluator.reads_team), commit.store, parse
                    )
                except PermanentActionError as exc:
                    raise ApiError(400, str(exc)) from None
                change = made.change
                assert change is not None
                if change.refused:
                    config = self.runtime.snapshot.config
                    told = _refusal(change.refused, viewer, params, found, config)
                    raise ApiError(409, told)
                if not prepared.events:
                    return ok(_answer(change, None, conversation_id, workspace.team(viewer)))
                answer = await anyio.to_thread.run_sync(evaluator.evaluate, prepared.request)
                try:
                    changes = planning.Changes.of(self.runtime.snapshot.engine)
                    processed = await commit.run(_recorder(prepared, answer, changes))
                except StateChanged:
                    continue  # the conversation changed meanwhile: make the change anew
                break
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from None
        for result in processed:
            report(result, self.runtime.metrics, self.runtime.feed)
        updated = next(e for e in prepared.events if e.event == "updated")
        if any(result.timers for result in processed):
            self.runtime.wake("timers")
        if any(result.recorded for result in processed):
            self.runtime.wake("outbox")
            audit(
                viewer,
                what,
                conversation=log_id(conversation_id),
                changed=",".join(sorted(k for k, v in change.changed.items() if v)),
                event=log_id(updated.id),
            )
        return ok(_answer(change, updated.id, conversation_id, workspace.team(viewer)))

    def _state_action(self, role: str) -> Action:
        snapshot = self.runtime.snapshot
        action = next((a for a in snapshot.engine.actions.values() if a.console_role == role), None)
        if action is None:
            raise ApiError(409, f"no installed action does what the console needs ({role})")
        return action


class _Made:
    """What :func:`_maker`'s last run did."""

    change: StateChange | None = None


def _maker(
    action: Action, params: BaseModel, cause: Event, found: Found, config: Config, made: _Made
) -> Callable[[State], list[Event]]:
    """The "parse" step of the change: make it on the state, and return its events as the
    agent's (``origin: console``, the agent), with the client as the state holds it
    (:meth:`Found.now`: not as it was before an erasure committed meanwhile)."""

    def parse(state: State) -> list[Event]:
        conversation, client = found.now(state)
        now = cause.model_copy(update={"conversation": conversation, "client": client})
        change = action.change_state(params, now, state, config)
        made.change = change
        return [
            event.model_copy(update={"origin": "console", "agent": cause.agent})
            for event in change.emitted
        ]

    return parse


def _recorder(
    prepared: planning.Prepared, answer: list[Evaluation] | Refusal, changes: planning.Changes
) -> Callable[[JournaledState], list[Processed]]:
    def work(state: JournaledState) -> list[Processed]:
        return planning.record(state, prepared, answer, inbox_id=None, changes=changes)

    return work


def _answer(
    change: StateChange, event_id: str | None, conversation_id: str, team: TeamView
) -> dict[str, Any]:
    """What the change answers, naming only the agents ``team``'s viewer may see."""
    conversation = change.conversation.model_dump(mode="json")
    changed = team.event({"changed": change.changed})["changed"]
    return {
        "event_id": event_id,
        "changed": changed,
        "conversation": shortened(
            team.conversation({**conversation, "id": conversation_id}), MAX_THREAD_TEXT
        ),
    }


def _refusal(refused: str, viewer: Viewer, params: BaseModel, found: Found, config: Config) -> str:
    """Why a change was refused, as ``viewer`` may be told: an agent named for assignment whom
    the viewer may not see (the agents of other channels) is refused as an email no agent has,
    so that trying emails does not tell an agent who works on the channels they are not on."""
    email = getattr(params, "agent", None)
    if viewer.admin or not isinstance(email, str):
        return refused
    agent = config.directory.get(email)
    if agent is not None and viewer.may_see_agent(agent):
        return refused
    return f"agent {email.strip().lower()} has no access to channel {found.channel!r}"


def _problems(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)
