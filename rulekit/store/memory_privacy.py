"""Forgetting a client in the in-memory store: the rows behind
:meth:`MemoryState.forget_client <rulekit.store.memory.MemoryState.forget_client>` (the walk and
what is erased are :mod:`rulekit.store.erasure`'s, as for the durable stores)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rulekit.event import Conversation
from rulekit.store.erasure import AttemptRow, ConversationRow, EventRow, InboxRow, JobRow

if TYPE_CHECKING:
    from rulekit.store.memory import MemoryState


class MemoryForgetRows:
    """:class:`rulekit.store.erasure.ForgetRows` over a :class:`MemoryState`."""

    def __init__(self, state: MemoryState) -> None:
        self.state = state

    def clients(self, client_id: str, channel: str | None) -> list[dict[str, Any]]:
        return [
            client.model_dump(mode="json")
            for (on, key), client in self.state.clients.items()
            if key == client_id and channel in (None, on)
        ]

    def delete_clients(self, client_id: str, channel: str | None) -> int:
        keys = [
            key for key in self.state.clients if key[1] == client_id and channel in (None, key[0])
        ]
        for key in keys:
            del self.state.clients[key]
        return len(keys)

    def events(self, client_id: str, channel: str | None) -> list[EventRow]:
        return [
            EventRow(r.event_id, r.event_id, r.inbox_id, r.conversation_id, r.data, r.trace)
            for r in self.state.events.values()
            if (r.data.get("client") or {}).get("id") == client_id and channel in (None, r.channel)
        ]

    def update_event(self, row: EventRow, data: dict[str, Any], trace: Any) -> None:
        record = self.state.events[row.key]
        self.state.events[row.key] = dataclasses.replace(record, data=data, trace=trace)

    def conversations(
        self, client_id: str, ids: Sequence[str], channel: str | None
    ) -> list[ConversationRow]:
        return [
            ConversationRow(on, key, conversation.model_dump(mode="json"))
            for (on, key), conversation in self.state.conversations.items()
            if channel in (None, on) and (key == client_id or conversation.id in ids)
        ]

    def update_conversation(self, row: ConversationRow, data: dict[str, Any]) -> None:
        self.state.conversations[(row.channel, row.key)] = Conversation.model_validate(data)

    def inbox(self, ids: Sequence[int], client_id: str, channel: str | None) -> list[InboxRow]:
        needle = client_id.encode()
        return [
            InboxRow(item.id, bool(item.body), item.error)
            for item in self.state.inbox.values()
            if item.status != "pending"
            and (
                item.id in ids
                or (
                    channel in (None, item.channel)
                    and (item.conversation_key == client_id or needle in item.body)
                )
            )
        ]

    def erase_inbox(self, row: InboxRow, error: str | None) -> None:
        item = self.state.inbox[row.id]
        self.state.inbox[row.id] = dataclasses.replace(item, body=b"", error=error)

    def jobs(self, event_ids: Sequence[str]) -> list[JobRow]:
        return [
            JobRow(job.id, job.params, job.result, job.last_error)
            for job in self.state.outbox.values()
            if job.event_id in event_ids
        ]

    def update_job(self, row: JobRow, params: Any, result: Any, error: str | None) -> None:
        job = self.state.outbox[row.id]
        self.state.outbox[row.id] = dataclasses.replace(
            job, params=params, result=result, last_error=error
        )

    def attempts(self, job_ids: Sequence[int]) -> list[AttemptRow]:
        return [
            AttemptRow((job_id, index), attempt.result, attempt.error)
            for job_id in job_ids
            for index, attempt in enumerate(self.state.attempt_log.get(job_id, []))
        ]

    def update_attempt(self, row: AttemptRow, result: Any, error: str | None) -> None:
        job_id, index = row.key
        log = list(self.state.attempt_log[job_id])
        log[index] = dataclasses.replace(log[index], result=result, error=error)
        self.state.attempt_log[job_id] = log
