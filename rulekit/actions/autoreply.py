"""``autoreply``: a message to the client, in the conversation, through its own channel."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from rulekit.actions.answers import forget_answer, lost_answer
from rulekit.actions.base import Action, ActionContext
from rulekit.channels.base import Reply
from rulekit.channels.hookrunner import HookUnanswered, ask
from rulekit.errors import PermanentActionError, RetryableActionError
from rulekit.event import Agent
from rulekit.hookspecs import hookimpl
from rulekit.models import StrictModel
from rulekit.registry import ActionRegistry


class AutoreplyParams(StrictModel):
    text: str = Field(min_length=1, description="The message to the client (plain text).")
    on_recovered: bool = Field(
        False,
        description="Also answer messages first seen late (in a transcript); off by default.",
    )
    as_agent: str | None = Field(
        None,
        description="Send as this agent (an email of the directory) instead of the assignee.",
    )


class Autoreply(Action):
    """Write to the client in the conversation; the channel's provider knows how."""

    name = "autoreply"
    description = "reply to the client in the conversation, through its channel"
    Params = AutoreplyParams
    client_facing = True
    replies_through_channel = True
    calls_channel_service = True
    console_role = "reply"
    sees_conversation = True

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        if context is None:
            return None
        if context.provider is None:
            return f"channel {context.event.channel!r} is not configured"
        return context.provider.reply_problem()

    def would_fail(self, params: AutoreplyParams, context: ActionContext) -> str | None:  # type: ignore[override]
        if problem := self.unavailable(context):
            return problem
        if params.as_agent or "assignee" in context.decided_later:  # someone to send as
            return None
        assert context.provider is not None
        return context.provider.sender_problem(context.event.conversation)

    def destination(self, params: Any) -> str:
        return "autoreply"

    def _reply(self, params: AutoreplyParams, context: ActionContext) -> Reply:
        # the conversation as the earlier actions of the plan left it (``sees_conversation``):
        # after an ``assign``, the reply is sent as the assigned agent
        return Reply(
            context.event.conversation, context.event.client, params.text, _agent(params, context)
        )

    def describe(self, params: AutoreplyParams, context: ActionContext) -> str:  # type: ignore[override]
        if context.provider is None:
            return f"reply to client {context.event.client.id}: {params.text!r}"
        reply = self._reply(params, context)
        if "assignee" in context.decided_later:
            picked = "the agent an earlier assign picks"
            conversation = reply.conversation.model_copy(update={"assignee": picked})
            reply = Reply(conversation, reply.client, reply.text, reply.agent)
        return context.provider.describe_reply(reply)

    async def execute(self, params: AutoreplyParams, context: ActionContext) -> dict[str, Any]:  # type: ignore[override]
        # Skipping ``recovered`` events is the engine's decision (it knows the rule's options
        # and writes the trace); by the time a call gets here, it is meant to be sent.
        problem = self.unavailable(context)
        if problem or context.provider is None:
            raise PermanentActionError(problem or "no provider")
        provider = context.provider
        if not (params.as_agent or "assignee" in context.decided_later):  # (as would_fail)
            try:
                problem = await ask(
                    context.hooks, provider, "sender_problem", context.event.conversation
                )
            except HookUnanswered as exc:
                raise RetryableActionError(f"channel {provider.channel!r}: {exc}") from None
            if problem:
                raise PermanentActionError(problem)
        forget_answer()
        try:
            # the provider gets the timeout for its own client; this one is the backstop, and
            # as it started first, it is the one that ends a call that takes the whole time
            async with asyncio.timeout(self.timeout):
                return await provider.send_reply(self._reply(params, context), timeout=self.timeout)
        except TimeoutError:
            message = f"{provider.name} did not answer within {self.timeout:g} s"
            # an answer whose head came (a 2xx: the service took the reply) and whose rest did
            # not is final: another attempt would write to the client twice
            raise lost_answer(message) or RetryableActionError(message) from None


def _agent(params: AutoreplyParams, context: ActionContext) -> Agent | None:
    """The agent ``as_agent`` names, as the directory knows them."""
    if not params.as_agent:
        return None
    entry = context.config.directory.get(params.as_agent)
    if entry is None:
        return Agent(email=params.as_agent)
    return Agent(email=entry.email, name=entry.name, known=True)


@hookimpl
def rulekit_register_actions(register: ActionRegistry) -> None:
    register.add(Autoreply)
