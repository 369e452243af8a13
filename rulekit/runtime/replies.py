"""The reply times of a conversation (``last_client_message_at``, ``last_agent_reply_at``,
``first_agent_reply_at``), kept from its events so that a timed rule can ask, when its timer
fires, whether an agent answered meanwhile.

The times are stored with the conversation (under the provider's key; under the conversation's
id for a conversation no provider stored, e.g. normalized events in ``rulekit test``) and set
on each event's ``conversation`` before it is evaluated.
"""

from __future__ import annotations

from rulekit.event import Event
from rulekit.store.base import State

REPLY_FIELDS = ("last_client_message_at", "last_agent_reply_at", "first_agent_reply_at")


def note_replies(state: State, event: Event) -> None:
    """Update the stored reply times with ``event`` and set them on its conversation."""
    conversation = event.conversation
    if not conversation.id or event.origin != "channel":
        return
    found = state.find_conversation(event.channel, conversation.id)
    key, stored = found if found is not None else (conversation.id, conversation)
    times = {name: getattr(conversation, name) or getattr(stored, name) for name in REPLY_FIELDS}
    at = event.occurred_at
    author = event.message.author if event.event == "message" else None
    if author == "client":
        times["last_client_message_at"] = at
    elif author == "agent" or event.event == "agent_replied":
        times["last_agent_reply_at"] = at
        times["first_agent_reply_at"] = times["first_agent_reply_at"] or at
    changed = {name: value for name, value in times.items() if getattr(stored, name) != value}
    for name, value in times.items():
        setattr(conversation, name, value)
    if changed or found is None:
        state.save_conversation(event.channel, key, stored.model_copy(update=times))
