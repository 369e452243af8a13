"""``update_client``: change the client's name, email, phone or notes, at the channel's
service (Chatra: ``PUT /clients/{id}``) and in rulekit's own record of the client.

Only the fields written are changed; an empty value (``""``, or ``null`` from the console)
clears one. Agents use it from the console (``PATCH .../client``); rules may use it too, e.g. to
put a note on a client.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from rulekit.actions.base import Action, ActionContext, conversation_lane
from rulekit.errors import PermanentActionError, RetryableActionError
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry
from rulekit.store.cached import holding

if TYPE_CHECKING:
    from rulekit.config import Config
    from rulekit.event import Event
    from rulekit.store.base import State

MAX_FIELD = 500


class UpdateClientParams(StrictModel):
    name: str | None = Field(None, max_length=MAX_FIELD, description="The client's name.")
    email: str | None = Field(None, max_length=MAX_FIELD, description="The client's email.")
    phone: str | None = Field(None, max_length=MAX_FIELD, description="The client's phone.")
    notes: str | None = Field(None, max_length=MAX_FIELD * 8, description="Notes on the client.")

    def changes(self) -> dict[str, str | None]:
        """The fields written, with their new value (None: cleared, written ``""``). A field
        that is None was not written: a rule's planned parameters hold every field, those it
        left out as None (read as "cleared", a note put on a client cleared their name, email
        and phone at the channel's service and in rulekit's record)."""
        fields = sorted(type(self).model_fields)
        return {
            name: getattr(self, name) or None for name in fields if getattr(self, name) is not None
        }


class UpdateClient(Action):
    """Change the client's contact data where the channel keeps it."""

    name = "update_client"
    description = "change the client's name, email, phone or notes, at the channel's service"
    Params = UpdateClientParams
    console_role = "client"
    calls_channel_service = True

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if context is None:
            return None
        if context.provider is None:
            return f"channel {context.event.channel!r} is not configured"
        return context.provider.update_problem()

    def describe(self, params: UpdateClientParams, context: ActionContext) -> str:  # type: ignore[override]
        fields = ", ".join(params.changes()) or "nothing"
        return f"change {fields} of client {context.event.client.id}"

    async def execute(self, params: UpdateClientParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        problem = self.unavailable(context)
        if problem or context.provider is None:
            raise PermanentActionError(problem or "no provider")
        client_id = context.event.client.id
        if not client_id:
            raise PermanentActionError("the event has no client id")
        changes = params.changes()
        if not changes:
            return {"changed": []}
        provider = context.provider
        try:
            async with asyncio.timeout(self.timeout):
                answer = await provider.update_client(client_id, changes, timeout=self.timeout)
        except TimeoutError:
            raise RetryableActionError(
                f"{provider.name} did not answer within {self.timeout:g} s"
            ) from None
        # rulekit's record changes once the service has taken the change: one it refuses for
        # good (the job dead-lettered) is not kept here either
        store = context.store
        if store is not None:

            def record() -> None:
                # the record is held from its read to the commit: a change committed meanwhile
                # (a webhook's) is waited for, never written over
                with holding(store) as state:
                    _record(params, context.event, state)

            # in a worker thread: waiting for a locked row holds up this job, not the event
            # loop (every webhook, request and other job of the daemon)
            await asyncio.to_thread(record)
        return {"changed": sorted(changes), "answer": answer}

    def simulate(  # type: ignore[override]
        self,
        params: UpdateClientParams,
        event: Event,
        state: State,
        config: Config,
        *,
        call: str = "",
    ) -> list[Event]:
        if not event.client.id:
            raise PermanentActionError("the event has no client id")
        _record(params, event, state)
        return []


def pending_changes(state: State, channel: str, conversation_id: str) -> dict[str, str | None]:
    """The client's fields this conversation's changes still to be sent will set (the newest
    change of each field): values the channel's service does not know yet, so that its
    webhooks still carry the old ones."""
    found: dict[str, str | None] = {}
    lane = conversation_lane(channel, conversation_id)
    for params in state.pending_params(lane, UpdateClient.name):
        try:
            found.update(UpdateClientParams.model_validate(params).changes())
        except ValidationError:
            continue  # (a job this version's action cannot read: it says nothing of the data)
    return found


def _record(params: UpdateClientParams, event: Event, state: State) -> None:
    """Write the changes into rulekit's own record of the client (one it knows)."""
    changes = params.changes()
    known = state.get_client(event.channel, event.client.id or "") if changes else None
    if known is not None:
        state.save_client(event.channel, known.model_copy(update=changes))


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(UpdateClient)
