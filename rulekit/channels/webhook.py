"""The built-in ``webhook`` provider: accepts normalized events as JSON.

It lets any system that can shape its own data post events to rulekit (and lets tests and
``rulekit test`` feed normalized events through the same path as a real provider). Its default
channel is none: configure one (``channels: {web: {provider: webhook}}``).

What rulekit itself decides is not taken from the body: the event's channel, its ``origin``
(:mod:`rulekit.channels.guarantees`), and whether its agent is ``known`` (in the directory).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from rulekit.channels.body import bounded_key
from rulekit.errors import ChannelError
from rulekit.event import Event
from rulekit.hookspecs import hookimpl
from rulekit.registry import ProviderRegistry
from rulekit.store.base import State
from rulekit.store.state import first_key
from rulekit.validation import dotted

from .base import Provider


class WebhookProvider(Provider):
    """Normalized events in, as a JSON object or a list of them."""

    name = "webhook"
    description = "normalized rulekit events posted as JSON"

    def parse(self, body: bytes, state: State) -> list[Event]:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ChannelError(f"the body is not valid JSON: {exc}") from None
        items = data if isinstance(data, list) else [data]
        events = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ChannelError(f"item {index} is not a JSON object")
            try:
                event = Event.model_validate({**item, "channel": self.channel})
            except ValidationError as exc:
                first = exc.errors(include_url=False, include_input=False)[0]
                raise ChannelError(f"{dotted(tuple(first['loc']))}: {first['msg']}") from None
            self._directory_agent(event)
            event.message.id = bounded_key(event.message.id)
            if event.message.id and not state.mark_message_seen(self.channel, self._mark(event)):
                continue
            events.append(event)
        return events

    def _mark(self, event: Event) -> str:
        """What says the event's message was seen: its id in its conversation (a sender may
        number messages per conversation, a ticket's first comment ``1``), the conversation
        as it is stored (``order-7`` and ``web:order-7`` are one). An edit
        (``message.edited``) is a change of a message seen before, each its own: marked
        apart, by its event's id too, so that neither the message nor an earlier edit makes
        it a repeat, and the same edit posted again is one."""
        assert event.message.id is not None
        conversation = event.conversation.id
        where = first_key(self.channel, conversation) if conversation else ""
        # (the length first: no conversation id and message id run together as another's)
        mark = f"{len(where)}:{where}:{event.message.id}"
        if event.message.edited:
            mark = f"edit:{len(event.message.id)}:{mark}:{event.id}"
        return bounded_key(mark) or event.message.id

    def conversation_key(self, data: Any) -> str | None:
        """The key the body's conversation is stored under (its id without ``<channel>:``),
        when every event of the body is of that one conversation; None when they are of
        several, or none says its conversation. With it, a conversation's webhooks are
        processed one at a time in the order they were received, by several daemons as by
        one, and a timed rule's timer waits for the ones received before it fell due (an
        ``agent_replied`` acknowledged in time cancels it, even while processing is behind)."""
        items = data if isinstance(data, list) else [data]
        keys = {
            first_key(self.channel, found) if (found := _conversation_id(item)) else None
            for item in items
        }
        return keys.pop() if len(keys) == 1 else None

    def _directory_agent(self, event: Event) -> None:
        """``agent.known`` as the contract means it, whatever the body says: whether the
        config's directory lists the agent's email (then spelled as the directory spells it,
        as every provider matches agents). A sender cannot pass someone off as a directory
        agent, nor a directory agent as a stranger (rules on ``not agent.known`` alert on
        answers from outside the team)."""
        agent = event.agent
        entry = self.directory.get(agent.email)
        agent.known = entry is not None
        if entry is not None:
            agent.email = entry.email


def _conversation_id(item: Any) -> str | None:
    """The conversation id one event of a body says, or None."""
    conversation = item.get("conversation") if isinstance(item, dict) else None
    found = conversation.get("id") if isinstance(conversation, dict) else None
    return found if isinstance(found, str) and found else None


@hookimpl
def rulekit_register_providers(register: ProviderRegistry) -> None:
    register.add(WebhookProvider)
