"""What agents change from the console: a reply to the client, the client's data.

Each change is an event of origin ``console`` (``agent_replied``, ``client_updated``) with the
agent who made it, handled like a webhook's event: the rules evaluate it (in the evaluation
worker, no transaction open), then one transaction records it with its trace, the rules' jobs
and the change's own job, first in its plan: the call to the channel's provider (the action
whose :attr:`~rulekit.actions.base.Action.console_role` is ``reply`` or ``client``). The
dispatcher sends it like any job: durable in the outbox, retried with backoff, dead-lettered
with its error (and retryable) when it fails for good. The provider's echo of a reply is
recognised as rulekit's own (Chatra: ``receivedFrom``), so no ``agent_replied`` rule fires
twice.

A request may carry an ``Idempotency-Key`` header: the same agent sending the same key again
gets the first request's event back instead of a second reply.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread
from starlette.responses import Response

from rulekit.addresses import address_problem
from rulekit.channels.base import Provider
from rulekit.channels.hookrunner import HookUnanswered, ask
from rulekit.errors import StoreUnavailable
from rulekit.event import Agent, Client, Conversation, Event, Message
from rulekit.runtime import planning
from rulekit.runtime.logs import log_id
from rulekit.runtime.planning import Processed, StateChanged
from rulekit.runtime.reporting import report
from rulekit.runtime.worker import Evaluation, Refusal
from rulekit.safetext import escape_controls, text_problem
from rulekit.server.console import conversations, idempotency
from rulekit.server.console.conversations import CONSOLE_RULE
from rulekit.server.console.journal import known, shortened
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.workspace import ApiError, Workspace, audit, ok, store_unavailable
from rulekit.store.base import JournaledState, State
from rulekit.store.records import JobSpec

if TYPE_CHECKING:
    from rulekit.actions.base import Action
    from rulekit.channels.hookrunner import HookRunner
    from rulekit.runtime.commit import GroupCommit
    from rulekit.runtime.evaluator import Evaluator
    from rulekit.runtime.feed import LiveFeed
    from rulekit.runtime.metrics import Metrics
    from rulekit.snapshot import Snapshot

MAX_TEXT = 5000
"""The longest reply (Chatra's limit for a message)."""
MAX_FIELD = 500
MAX_NOTES = 4000
CONTACT = ("name", "email", "phone", "notes")


class Runtime(Protocol):
    """What a change needs of the running daemon."""

    commit: GroupCommit | None
    evaluator: Evaluator | None
    metrics: Metrics
    feed: LiveFeed
    hooks: HookRunner

    @property
    def snapshot(self) -> Snapshot: ...

    def wake(self, queue: str) -> None: ...


class Changes:
    """Replies and client changes of one daemon's console."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    # a reply ---------------------------------------------------------------------------------
    async def reply(
        self,
        workspace: Workspace,
        viewer: Viewer,
        conversation_id: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> Response:
        if viewer.email is None:
            raise ApiError(403, "the admin token cannot reply: agents reply as themselves")
        text = body.get("text")
        if set(body) - {"text"}:
            raise ApiError(400, f"unknown fields: {', '.join(sorted(set(body) - {'text'}))}")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "text must be a non-empty string")
        if len(text) > MAX_TEXT:
            raise ApiError(400, f"text is longer than {MAX_TEXT} characters")
        if problem := text_problem(text, multiline=True):
            raise ApiError(400, f"text {problem}")
        found = await self._found(workspace, viewer, conversation_id)
        channel = found.channel
        action, provider = await self._action("reply", channel)
        # refused, not cut as a rule's reply is: the agent can still shorten what they wrote
        if problem := await self._ask(provider, "reply_length_problem", text):
            raise ApiError(400, problem)
        now = datetime.now(UTC)
        token = change_token(viewer, idempotency_key, "POST", "messages", conversation_id, body)
        agent = Agent(email=viewer.email, name=viewer.name, known=True)
        event = Event(
            id=f"{channel}:console:{token}",
            channel=channel,
            event="agent_replied",
            occurred_at=now,
            origin="console",
            conversation=found.conversation,
            client=found.client,
            message=Message(
                id=f"console:{token}",
                text=text,
                author="agent",
                agent=viewer.email,
                created_at=now,
            ),
            agent=agent,
        )
        params = {"text": text, "as_agent": viewer.email}
        reopen = provider is not None and provider.agent_reply_reopens
        after = partial(_reopened, found) if reopen else None
        _, recorded, job_id = await self._submit(found, event, action, params, after, reopen=reopen)
        if recorded:
            audit(viewer, "replied", conversation=log_id(conversation_id), event=log_id(event.id))
        return ok(
            {
                "event_id": event.id,
                "job_id": job_id,
                "status": "pending",
                "duplicate": not recorded,
            },
            202 if recorded else 200,
        )

    # the client's data -----------------------------------------------------------------------
    async def update_client(
        self,
        workspace: Workspace,
        viewer: Viewer,
        conversation_id: str,
        body: dict[str, Any],
        idempotency_key: str | None,
    ) -> Response:
        changes = _contact_changes(body)
        found = await self._found(workspace, viewer, conversation_id)
        channel, client = found.channel, found.client
        if not client.id:
            raise ApiError(409, "the conversation has no client whose data could change")
        action, provider = await self._action("client", channel)
        if problem := await self._ask(provider, "update_fields_problem", changes):
            raise ApiError(409, problem)
        changed = {k: v for k, v in changes.items() if getattr(client, k) != v}
        if not changed:
            return ok({"event_id": None, "job_id": None, "changed": [], "client": _panel(client)})
        token = change_token(viewer, idempotency_key, "PATCH", "client", conversation_id, body)
        event = console_event(
            viewer, f"client:{token}", channel, "client_updated", found.conversation, client
        )

        def save(state: JournaledState, event: Event) -> None:
            state.save_client(channel, event.client)

        # the action's parameters: a field cleared is written "" (None is a field not written)
        params = {key: "" if value is None else value for key, value in changed.items()}
        recorded_event, recorded, job_id = await self._submit(
            found, event, action, params, save, changed
        )
        updated = recorded_event.client
        if recorded:
            audit(
                viewer,
                "changed client data",
                conversation=log_id(conversation_id),
                fields=",".join(sorted(changed)),
                event=log_id(event.id),
            )
        return ok(
            {
                "event_id": event.id,
                "job_id": job_id,
                "changed": sorted(changed),
                "client": _panel(updated),
            },
            202 if recorded else 200,
        )

    # shared ----------------------------------------------------------------------------------
    async def _found(self, workspace: Workspace, viewer: Viewer, conversation_id: str) -> Found:
        found = await workspace.read(current, conversation_id, workspace.channels_of(viewer))
        if found is None:
            raise ApiError(404, "no such conversation")
        assert isinstance(found, Found)
        return found

    async def _action(self, role: str, channel: str) -> tuple[Action, Provider]:
        snapshot = self.runtime.snapshot
        action = next((a for a in snapshot.engine.actions.values() if a.console_role == role), None)
        provider = snapshot.providers.get(channel)
        if action is None:
            raise ApiError(409, f"no installed action does what the console needs ({role})")
        if provider is None:
            raise ApiError(409, f"channel {channel!r} is not configured")
        if problem := await self._ask(
            provider, "reply_problem" if role == "reply" else "update_problem"
        ):
            raise ApiError(409, problem)
        return action, provider

    async def _ask(self, provider: Provider, method: str, *args: Any) -> Any:
        """What ``provider``'s ``method`` answers to ``args``: the project's own method in
        place, a plugin's off the event loop within its budget (a 503 when it does not answer:
        :mod:`rulekit.channels.hookrunner`)."""
        try:
            return await ask(self.runtime.hooks, provider, method, *args)
        except HookUnanswered as exc:
            raise ApiError(
                503, f"channel {provider.channel!r}: {exc}; retry later", {"Retry-After": "1"}
            ) from None

    async def _submit(
        self,
        found: Found,
        event: Event,
        action: Action,
        params: dict[str, Any],
        after: Callable[[JournaledState, Event], None] | None = None,
        changes: dict[str, Any] | None = None,
        *,
        reopen: bool = False,
    ) -> tuple[Event, bool, int | None]:
        """Evaluate ``event`` — with the conversation and client as the store holds them when
        it is evaluated (:meth:`Found.now`; ``changes`` made to the client; with ``reopen``, a
        closed conversation opened again) —, then record it
        with its jobs, the change's own job first (and then ``after(state, event)``, in the
        same transaction, when the event is new); the event recorded, whether it was new, and
        that job's id."""
        commit, evaluator = self.runtime.commit, self.runtime.evaluator
        if commit is None or evaluator is None:
            raise ApiError(503, "the daemon is not running")
        spec = JobSpec(
            rule=CONSOLE_RULE,
            action=action.name,
            params=params,
            destination=action.destination(action.Params.model_validate(params)),
            lane=action.lane(action.Params.model_validate(params), event),
        )
        try:
            while True:
                prepared = await anyio.to_thread.run_sync(
                    partial(planning.prepare, team=evaluator.reads_team),
                    commit.store,
                    partial(_as_now, found, event, changes or {}, reopen),
                )
                answer = await anyio.to_thread.run_sync(evaluator.evaluate, prepared.request)
                try:
                    processed, job_id = await commit.run(
                        _recorder(
                            prepared,
                            _with_job(event, answer, spec),
                            after,
                            planning.Changes.of(self.runtime.snapshot.engine),
                        )
                    )
                except StateChanged:
                    continue
                break
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from None
        for result in processed:
            report(result, self.runtime.metrics, self.runtime.feed)
        recorded = any(result.recorded for result in processed)
        if recorded:
            self.runtime.wake("outbox")
        if any(result.timers for result in processed):
            self.runtime.wake("timers")
        return prepared.events[0], recorded, job_id


def _as_now(
    found: Found, event: Event, changes: dict[str, Any], reopen: bool, state: State
) -> list[Event]:
    """The "parse" step of a change: ``event`` with the conversation and client as ``state``
    holds them (the change's ``changes`` made to the client). Read in the transaction whose
    reads the recording one replays, so an erasure committed meanwhile is seen.

    With ``reopen`` (a reply, on a channel whose agents' messages open a closed conversation
    again: :attr:`~rulekit.channels.base.Provider.agent_reply_reopens`), a closed conversation
    is open again, as when an agent writes into it from the channel's own app: the client's
    answer is then a ``message``, not a ``reopened`` (whose rules greet, notify and assign as
    for a client coming back)."""
    conversation, client = found.now(state)
    if reopen and conversation.status == "closed":
        conversation = conversation.model_copy(update={"status": "open"})
    if changes:
        client = client.model_copy(update=changes)
    return [event.model_copy(update={"conversation": conversation, "client": client})]


def _reopened(found: Found, state: JournaledState, event: Event) -> None:
    """The stored conversation of a reply, opened again when it was closed: once, with the
    reply recorded (a retry that finds the reply recorded opens nothing closed since)."""
    stored = state.get_conversation(found.channel, found.key) if found.key else None
    if found.key is not None and stored is not None and stored.status == "closed":
        state.save_conversation(
            found.channel, found.key, stored.model_copy(update={"status": "open"})
        )


def _recorder(
    prepared: planning.Prepared,
    answer: list[Evaluation],
    after: Callable[[JournaledState, Event], None] | None,
    changes: planning.Changes,
) -> Any:
    def work(state: JournaledState) -> tuple[list[Processed], int | None]:
        event = prepared.events[0]
        new = state.get_event(event.id) is None
        # the replay of what the evaluation read comes first: it would find a write of the
        # change's own (the client saved) a change of the state
        processed = planning.record(state, prepared, answer, inbox_id=None, changes=changes)
        if new and after is not None:
            after(state, event)
        job = next((j for j in state.jobs(event_id=event.id) if j.rule == CONSOLE_RULE), None)
        return processed, job.id if job else None

    return work


def _with_job(event: Event, answer: list[Evaluation] | Refusal, spec: JobSpec) -> list[Evaluation]:
    """The evaluations with the change's own job first in the event's plan (a refused
    evaluation still records the event and the change)."""
    evaluations = [planning.refused(event, answer)] if isinstance(answer, Refusal) else answer
    return [
        Evaluation(
            e.event_id,
            [spec, *e.jobs],
            e.trace,
            e.matched,
            e.errors,
            e.cooldowns,
            e.cooldowns_read,
            team=e.team,
        )
        if e.event_id == event.id
        else e
        for e in evaluations
    ]


@dataclass(frozen=True)
class Found:
    """A conversation as a change read it first: its channel, the key of its stored state,
    its state and its client (and whether the store kept a record of the client)."""

    channel: str
    key: str | None
    conversation: Conversation
    client: Client
    client_stored: bool

    def now(self, state: State) -> tuple[Conversation, Client]:
        """The conversation and its client as ``state`` holds them now. An erasure committed
        since the first read (``rulekit forget``) deleted the client's record and cleared the
        conversation's page: what it erased is not recorded again with the change (only the
        client's id is left)."""
        conversation = self.conversation
        if self.key is not None:
            stored = state.get_conversation(self.channel, self.key)
            if stored is not None:
                conversation = stored.model_copy(update={"id": self.conversation.id})
        client = self.client
        if self.client_stored and client.id:
            client = state.get_client(self.channel, client.id) or Client(id=client.id)
        return conversation, client


def current(state: JournaledState, conversation_id: str, channels: frozenset[str]) -> Found | None:
    """A conversation's channel, state and client, as last recorded."""
    located = conversations.locate(state, conversation_id, channels)
    if located is None:
        return None
    channel, key = located
    latest = state.conversation_events(channel, conversation_id, limit=1)
    data = latest[0].data if latest else {}
    stored = state.get_conversation(channel, key) if key is not None else None
    conversation = stored or Conversation.model_validate(data.get("conversation") or {})
    conversation = conversation.model_copy(update={"id": conversation_id})
    client = Client.model_validate(data.get("client") or {})
    kept = state.get_client(channel, client.id) if client.id else None
    return Found(channel, key, conversation, kept or client, kept is not None)


def _contact_changes(body: dict[str, Any]) -> dict[str, str | None]:
    unknown = set(body) - set(CONTACT)
    if unknown:
        raise ApiError(
            400, f"only {', '.join(CONTACT)} can change, not {', '.join(sorted(unknown))}"
        )
    if not body:
        raise ApiError(400, f"name at least one of {', '.join(CONTACT)}")
    changes: dict[str, str | None] = {}
    for key, value in body.items():
        if value is not None and not isinstance(value, str):
            raise ApiError(400, f"{key} must be a string or null")
        value = value.strip() if value else None
        limit = MAX_NOTES if key == "notes" else MAX_FIELD
        if value is not None and len(value) > limit:
            raise ApiError(400, f"{key} is longer than {limit} characters")
        if value is not None and (problem := _field_problem(key, value)):
            raise ApiError(400, f"{key} {problem}")
        changes[key] = value or None
    return changes


def _field_problem(key: str, value: str) -> str | None:
    """Why ``value`` cannot be the client's ``key``: text a terminal or a list would act on
    (notes may have lines), an email that is not one plain ``local@domain``."""
    if key == "email":
        problem = address_problem(value)
        return f"{escape_controls(value)!r} {problem}" if problem else None
    return text_problem(value, multiline=key == "notes")


def _panel(client: Client) -> dict[str, Any]:
    # each text cut as the conversation view's: the client's custom data may be megabytes
    panel: dict[str, Any] = shortened(
        known(client.model_dump(mode="json")), conversations.MAX_THREAD_TEXT
    )
    return panel


def console_event(
    viewer: Viewer,
    token: str,
    channel: str,
    name: str,
    conversation: Conversation,
    client: Client,
) -> Event:
    """The event an agent's change from the console makes (``origin: console``, the agent as
    its author), with the id ``<channel>:console:<token>``."""
    return Event(
        id=f"{channel}:console:{token}",
        channel=channel,
        event=name,
        occurred_at=datetime.now(UTC),
        origin="console",
        conversation=conversation,
        client=client,
        agent=Agent(email=viewer.email, name=viewer.name, known=viewer.email is not None),
    )


def change_token(
    viewer: Viewer, key: str | None, method: str, endpoint: str, conversation_id: str, body: Any
) -> str:
    """The id part of a change: derived from the agent, their idempotency key and the request
    (:func:`~rulekit.server.console.idempotency.fingerprint`), else new. The same request sent
    again under the key makes the same event, recognised even once the ledger of keys let the
    key go; another request under a key the ledger let go makes another event (derived from
    the key alone, it would be taken for the first one and dropped)."""
    if key is None:
        return secrets.token_hex(12)
    who = viewer.email.lower() if viewer.email else "admin"
    request = idempotency.fingerprint(method, endpoint, conversation_id, body)
    return hashlib.sha256(f"{who}\0{key}\0{request}".encode()).hexdigest()[:24]
