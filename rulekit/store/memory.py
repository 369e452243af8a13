"""The in-memory store: state for ``rulekit test`` and for tests; gone when the process ends.

It implements the journal too, with the same behaviour as the durable stores (the behaviour
tests in ``tests/store`` run against all of them): JSON data is copied through JSON, times come
back in UTC, and a lock makes each transaction atomic for threads.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel

from rulekit.event import Client, Conversation, Event
from rulekit.store.base import JournaledState, JournaledStore
from rulekit.store.erasure import (
    PURGE_KINDS,
    forget_client,
)
from rulekit.store.listing import (
    MAX_PAGE,
    ConversationQuery,
    ConversationSummary,
    Position,
    matches_text,
)
from rulekit.store.records import (
    INTERRUPTED,
    Attempt,
    EventRecord,
    InboxItem,
    InboxStatus,
    Job,
    JobSpec,
    JobStatus,
    Outcome,
    check_attempt,
    utc,
)


def _json_copy(value: Any) -> Any:
    """What a durable store gives back for ``value``: its JSON round trip."""
    return None if value is None else json.loads(json.dumps(value, allow_nan=False))


def _claimable(claimed_until: datetime | None, now: datetime) -> bool:
    return claimed_until is None or claimed_until <= now


M = TypeVar("M", bound=BaseModel)
Claimable = TypeVar("Claimable", InboxItem, Job)


def _release(table: dict[int, Claimable], owner: str) -> int:
    """Release ``owner``'s claims on the pending records of ``table``; how many."""
    released = 0
    for key, record in list(table.items()):
        if record.status == "pending" and record.claimed_by == owner:
            table[key] = dataclasses.replace(record, claimed_by=None, claimed_until=None)
            released += 1
    return released


def _detached(model: M) -> M:
    """A copy sharing nothing mutable with ``model``.

    Scalars and datetimes are immutable, so a shallow copy plus copies of the list and dict
    fields is a full copy at a fraction of ``deepcopy``'s cost (stores are on every event's path).
    """
    copied = model.model_copy()
    for name, value in model.__dict__.items():
        if isinstance(value, list | dict):
            object.__setattr__(copied, name, copy.deepcopy(value))
    return copied


class MemoryState(JournaledState):
    """State held in plain containers whose values are never changed in place: conversations
    and clients are copied in and out, journal records are frozen and replaced. A transaction's
    rollback relies on it (it snapshots the containers, not their values)."""

    def __init__(self) -> None:
        self.conversations: dict[tuple[str, str], Conversation] = {}
        self.clients: dict[tuple[str, str], Client] = {}
        self.seen: set[tuple[str, str]] = set()
        self.cooldowns: dict[tuple[str, str], datetime] = {}
        self.positions: dict[str, int] = {}
        self.leases: dict[str, tuple[str, datetime]] = {}  # name -> (owner, until)
        self.inbox: dict[int, InboxItem] = {}
        self.delivery_keys: dict[tuple[str, str], int] = {}
        self.events: dict[str, EventRecord] = {}  # in processing order
        self.outbox: dict[int, Job] = {}
        self.attempt_log: dict[int, list[Attempt]] = {}
        self.last_id: dict[str, int] = {"inbox": 0, "outbox": 0}
        self.activity: dict[tuple[str, str], tuple[datetime, str | None]] = {}
        """(channel, conversation id) -> when it last had an event, and that event's client."""

    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        found = self.conversations.get((channel, key))
        return _detached(found) if found else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        self.conversations[(channel, key)] = _detached(conversation)

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        for (conv_channel, key), conversation in self.conversations.items():
            if conv_channel == channel and conversation.id == conversation_id:
                return key, _detached(conversation)
        return None

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        found = []
        for (channel, key), conversation in self.conversations.items():
            active_at, client_id = self.activity.get(
                (channel, conversation.id or ""), (EPOCH, None)
            )
            client = self.clients.get((channel, client_id)) if client_id else None
            position = Position(active_at, channel, key)
            if _selected(query, channel, conversation, client, position):
                found.append(ConversationSummary(channel, key, conversation, client, position))
        found.sort(key=lambda s: (s.position.active_at, s.channel, s.key), reverse=True)
        return [
            dataclasses.replace(
                s,
                conversation=_detached(s.conversation),
                client=_detached(s.client) if s.client else None,
            )
            for s in found[: max(1, min(query.limit, MAX_PAGE))]
        ]

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (conv_channel, _), conv in self.conversations.items():
            if conv.status == "open" and conv.assignee and channel in (None, conv_channel):
                key = conv.assignee.lower()
                counts[key] = counts.get(key, 0) + 1
        return counts

    def get_client(self, channel: str, client_id: str) -> Client | None:
        found = self.clients.get((channel, client_id))
        return _detached(found) if found else None

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.clients[(channel, client.id)] = _detached(client)

    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        key = (channel, message_id)
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def message_seen(self, channel: str, message_id: str) -> bool:
        return (channel, message_id) in self.seen

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        return self.cooldowns.get((rule, conversation_id))

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        return {
            rule: until for (rule, conv), until in self.cooldowns.items() if conv == conversation_id
        }

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.cooldowns[(rule, conversation_id)] = until

    def next_position(self, key: str, modulo: int) -> int:
        current = self.positions.get(key, 0)
        self.positions[key] = current + 1
        return current % modulo if modulo > 0 else 0

    # inbox -----------------------------------------------------------------------------------
    def append_inbox(
        self,
        channel: str,
        body: bytes,
        *,
        delivery_key: str | None = None,
        conversation_key: str | None = None,
        now: datetime | None = None,
    ) -> tuple[int, bool]:
        if delivery_key is not None and (channel, delivery_key) in self.delivery_keys:
            return self.delivery_keys[(channel, delivery_key)], False
        item_id = self._next_id("inbox")
        self.inbox[item_id] = InboxItem(
            id=item_id,
            channel=channel,
            received_at=utc(now),
            body=bytes(body),
            delivery_key=delivery_key,
            status="pending",
            attempts=0,
            conversation_key=conversation_key,
        )
        if delivery_key is not None:
            self.delivery_keys[(channel, delivery_key)] = item_id
        return item_id, True

    def claim_inbox(
        self, owner: str, *, lease: float, limit: int = 1, now: datetime | None = None
    ) -> list[InboxItem]:
        now = utc(now)
        claimed: list[InboxItem] = []
        held: set[tuple[str, str]] = set()  # conversations with an older pending item
        for item in self.inbox.values():  # ids ascend with insertion
            if len(claimed) >= limit:
                break
            if item.status != "pending":
                continue
            if item.conversation_key is not None:
                conversation = (item.channel, item.conversation_key)
                if conversation in held:
                    continue
                held.add(conversation)
            if _claimable(item.claimed_until, now):
                item = dataclasses.replace(
                    item,
                    claimed_by=owner,
                    claimed_until=now + timedelta(seconds=lease),
                    attempts=item.attempts + 1,
                )
                self.inbox[item.id] = item
                claimed.append(item)
        return claimed

    def finish_inbox(self, inbox_id: int, *, error: str | None = None) -> None:
        self._update_inbox(inbox_id, "done" if error is None else "failed", error)

    def requeue_inbox(self, inbox_id: int) -> None:
        self._update_inbox(inbox_id, "pending", None)

    def _update_inbox(self, inbox_id: int, status: InboxStatus, error: str | None) -> None:
        if inbox_id not in self.inbox:
            raise KeyError(f"no inbox item {inbox_id}")
        self.inbox[inbox_id] = dataclasses.replace(
            self.inbox[inbox_id], status=status, error=error, claimed_by=None, claimed_until=None
        )

    def inbox_items(
        self, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]:
        items = [i for i in reversed(self.inbox.values()) if status in (None, i.status)]
        return items[:limit]

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        return self.inbox.get(inbox_id)

    # audit trail and outbox ------------------------------------------------------------------
    def record_event(
        self,
        event: Event,
        *,
        inbox_id: int | None,
        trace: Mapping[str, Any],
        jobs: Sequence[JobSpec] = (),
        now: datetime | None = None,
    ) -> bool:
        if event.id in self.events:
            return False
        now = utc(now)
        self.events[event.id] = EventRecord(
            event_id=event.id,
            inbox_id=inbox_id,
            channel=event.channel,
            event=event.event,
            conversation_id=event.conversation.id,
            occurred_at=utc(event.occurred_at),
            processed_at=now,
            data=_json_copy(event.public()),
            trace=_json_copy(dict(trace)),
        )
        if event.conversation.id is not None:
            known = self.activity.get((event.channel, event.conversation.id))
            client_id = event.client.id or (known[1] if known else None)
            self.activity[(event.channel, event.conversation.id)] = (now, client_id)
        for spec in jobs:
            job_id = self._next_id("outbox")
            self.outbox[job_id] = Job(
                id=job_id,
                event_id=event.id,
                rule=spec.rule,
                action=spec.action,
                params=_json_copy(spec.params),
                destination=spec.destination,
                status="pending",
                attempts=0,
                next_attempt_at=now,
                lane=spec.lane or spec.destination,
            )
        return True

    def get_job(self, job_id: int) -> Job | None:
        return self.outbox.get(job_id)

    def conversation_events(
        self, channel: str, conversation_id: str, *, limit: int = 200
    ) -> list[EventRecord]:
        found = [
            record
            for record in reversed(self.events.values())
            if record.conversation_id == conversation_id and record.channel == channel
        ]
        return found[:limit]

    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        now = utc(now)
        pending = sorted(
            (job for job in self.outbox.values() if job.status == "pending"), key=lambda j: j.id
        )
        held = {  # lanes someone else holds
            job.lane
            for job in pending
            if not _claimable(job.claimed_until, now) and job.claimed_by != owner
        }
        blocked: set[str] = set()  # lanes past their first job that is not due
        due = []
        for job in pending:
            if job.lane in held or job.lane in blocked:
                continue
            if job.next_attempt_at > now:
                blocked.add(job.lane)
            elif _claimable(job.claimed_until, now):
                due.append(job)
        due = due[:limit]
        claimed = []
        for job in due:
            job = dataclasses.replace(
                job, claimed_by=owner, claimed_until=now + timedelta(seconds=lease)
            )
            self.outbox[job.id] = job
            claimed.append(job)
        return claimed

    def record_attempt(
        self,
        job_id: int,
        outcome: Outcome,
        *,
        error: str | None = None,
        result: Any = None,
        retry_at: datetime | None = None,
        hold: float | None = None,
        now: datetime | None = None,
    ) -> None:
        check_attempt(outcome, retry_at)
        if job_id not in self.outbox:
            raise KeyError(f"no job {job_id}")
        job = self.outbox[job_id]
        result = _json_copy(result)
        attempt = Attempt(job_id=job_id, at=utc(now), outcome=outcome, error=error, result=result)
        self.attempt_log[job_id] = [*self.attempt_log.get(job_id, ()), attempt]
        if job.status != "pending":  # done or dead stays so; the attempt is still counted
            self.outbox[job_id] = dataclasses.replace(
                job, attempts=job.attempts + 1, call_started_at=None, call_started_by=None
            )
            return
        until = None
        if outcome == "retry" and hold is not None and retry_at is not None:
            until = utc(retry_at) + timedelta(seconds=hold)
        self.outbox[job_id] = dataclasses.replace(
            job,
            status="pending" if outcome == "retry" else outcome,
            attempts=job.attempts + 1,
            next_attempt_at=utc(retry_at) if retry_at is not None else job.next_attempt_at,
            last_error=error if error is not None else job.last_error,
            result=result,
            claimed_by=job.claimed_by if until is not None else None,
            claimed_until=until,
            call_started_at=None,
            call_started_by=None,
        )

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        if job_id not in self.outbox:
            raise KeyError(f"no job {job_id}")
        now = utc(now)
        job = self.outbox[job_id]
        if job.status != "pending" or job.claimed_by != owner:
            return False
        if any(
            other.lane == job.lane and other.status == "pending" and other.id < job_id
            for other in self.outbox.values()
        ):
            self.outbox[job_id] = dataclasses.replace(job, claimed_by=None, claimed_until=None)
            return False
        attempts = job.attempts
        if job.call_started_by not in (None, owner):
            interrupted = Attempt(job_id=job_id, at=now, outcome="retry", error=INTERRUPTED)
            self.attempt_log[job_id] = [*self.attempt_log.get(job_id, ()), interrupted]
            attempts += 1
        self.outbox[job_id] = dataclasses.replace(
            job,
            attempts=attempts,
            call_started_at=now,
            call_started_by=owner,
            claimed_until=now + timedelta(seconds=lease),
        )
        return True

    def requeue_job(self, job_id: int, *, now: datetime | None = None) -> None:
        if job_id not in self.outbox:
            raise KeyError(f"no job {job_id}")
        self.outbox[job_id] = dataclasses.replace(
            self.outbox[job_id],
            status="pending",
            next_attempt_at=utc(now),
            claimed_by=None,
            claimed_until=None,
        )

    # reading the record ----------------------------------------------------------------------
    def release_claims(self, owner: str) -> int:
        return _release(self.inbox, owner) + _release(self.outbox, owner)

    def hold_lease(
        self, name: str, owner: str, seconds: float, *, now: datetime | None = None
    ) -> bool:
        now = utc(now)
        held = self.leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self.leases[name] = (owner, now + timedelta(seconds=seconds))
        return True

    def release_lease(self, name: str, owner: str) -> None:
        held = self.leases.get(name)
        if held is not None and held[0] == owner:
            del self.leases[name]

    def get_event(self, event_id: str) -> EventRecord | None:
        return self.events.get(event_id)

    def history(
        self,
        *,
        channel: str | None = None,
        event: str | None = None,
        rule: str | None = None,
        failed: bool = False,
        since: datetime | None = None,
        limit: int = 50,
    ) -> list[EventRecord]:
        def keep(record: EventRecord) -> bool:
            jobs = [job for job in self.outbox.values() if job.event_id == record.event_id]
            return (
                channel in (None, record.channel)
                and event in (None, record.event)
                and (since is None or record.processed_at >= utc(since))
                and (rule is None or any(job.rule == rule for job in jobs))
                and (not failed or any(job.status == "dead" for job in jobs))
            )

        return [record for record in reversed(self.events.values()) if keep(record)][:limit]

    def jobs(
        self, *, event_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        found = [
            job
            for job in self.outbox.values()
            if event_id in (None, job.event_id) and status in (None, job.status)
        ]
        return (found if event_id is not None else found[::-1])[:limit]

    def attempts(self, job_id: int) -> list[Attempt]:
        return list(self.attempt_log.get(job_id, []))

    # privacy and retention -------------------------------------------------------------------
    def forget_client(self, client_id: str, *, channel: str | None = None) -> dict[str, int]:
        from rulekit.store.memory_privacy import MemoryForgetRows

        return forget_client(MemoryForgetRows(self), client_id, channel)

    def purge(self, *, events_before: datetime, payloads_before: datetime) -> dict[str, int]:
        counts = dict.fromkeys(PURGE_KINDS, 0)
        events_before, payloads_before = utc(events_before), utc(payloads_before)
        pending = {job.event_id for job in self.outbox.values() if job.status == "pending"}
        old = {
            event_id
            for event_id, record in self.events.items()
            if record.processed_at < events_before and event_id not in pending
        }
        for job in list(self.outbox.values()):
            if job.event_id in old:
                counts["attempts"] += len(self.attempt_log.pop(job.id, []))
                del self.outbox[job.id]
                counts["jobs"] += 1
        for event_id in old:
            del self.events[event_id]
        counts["events"] = len(old)
        for item in list(self.inbox.values()):
            if item.status == "pending":
                continue
            if item.received_at < events_before:
                del self.inbox[item.id]
                if item.delivery_key is not None:
                    self.delivery_keys.pop((item.channel, item.delivery_key), None)
                counts["inbox"] += 1
                for record in self.events.values():
                    if record.inbox_id == item.id:
                        self.events[record.event_id] = dataclasses.replace(record, inbox_id=None)
            elif item.received_at < payloads_before and item.body:
                self.inbox[item.id] = dataclasses.replace(item, body=b"")
                counts["payloads"] += 1
        return counts

    def _next_id(self, table: str) -> int:
        self.last_id[table] += 1
        return self.last_id[table]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _selected(
    query: ConversationQuery,
    channel: str,
    conversation: Conversation,
    client: Client | None,
    position: Position,
) -> bool:
    assignee = (conversation.assignee or "").lower()
    return (
        (query.channels is None or channel in query.channels)
        and query.status in (None, conversation.status)
        and (not query.unassigned or not assignee)
        and (query.unassigned or query.assignee is None or assignee == query.assignee.lower())
        and (query.tag is None or query.tag in conversation.tags)
        and (not query.text or matches_text(conversation, client, query.text))
        and (
            query.after is None
            or (position.active_at, channel, position.key)
            < (query.after.active_at, query.after.channel, query.after.key)
        )
    )


class MemoryStore(JournaledStore):
    """An in-memory :class:`Store`; a failed transaction leaves the state as it was."""

    def __init__(self) -> None:
        self.state = MemoryState()
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[MemoryState]:
        with self._lock:
            # Stored values are never changed in place (conversations and clients are copied
            # in and out, records are frozen and replaced), so copying the containers is a
            # full snapshot, and cheap enough for a daemon running on memory://.
            backup = {name: copy.copy(value) for name, value in vars(self.state).items()}
            try:
                yield self.state
            except BaseException:
                self.state.__dict__ = backup
                raise
