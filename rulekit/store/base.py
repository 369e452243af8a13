"""The store interface: the conversation state the engine and providers read and update.

Providers derive events from it (is this chat closed? was this message seen?), the engine reads
cooldown marks from it, and ``assign`` keeps its round-robin positions in it. The stores
(SQLite, PostgreSQL, and SQLite in memory for ``rulekit test``) implement it with one body of
SQL (:mod:`rulekit.store.sql`), but nothing here may assume one backend.

All methods are synchronous and are called inside :meth:`Store.transaction`: everything one event
changes is committed together, or not at all.

The daemon also keeps a :class:`Journal` (inbox, audit trail, outbox) in the same store, so that
an event's state changes, its audit record and its action jobs commit in one transaction. Stores
that support it are :class:`JournaledStore`: their transactions yield a :class:`JournaledState`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from rulekit.event import Client, Conversation, Event
from rulekit.store.listing import ConversationQuery, ConversationSummary
from rulekit.store.lookups import Found, Key, Lookups, Saves
from rulekit.store.records import (
    Attempt,
    CallStart,
    EventRecord,
    InboxItem,
    InboxStatus,
    Job,
    JobSpec,
    JobStatus,
    NewEvent,
    Outcome,
    RuleStats,
    Timer,
)


class State(abc.ABC):
    """What one transaction can read and change."""

    batches = False
    """Whether reading and writing several things at once (:meth:`read_many`,
    :meth:`write_many`) saves work: each statement is a round trip to a database server."""

    # conversations ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        """The conversation a provider keys by ``key`` (e.g. Chatra's client id), if known."""

    @abc.abstractmethod
    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        """Create or replace the conversation stored under ``key``."""

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        """The provider's key and the conversation whose rulekit ``id`` is ``conversation_id``.

        Actions know a conversation by its id (the event's ``conversation.id``), providers by
        their own key; this is the bridge (``assign`` reads, changes and saves back under the
        key). Durable stores should index conversations by id to answer it quickly.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot find conversations by id")

    @abc.abstractmethod
    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        """How many open conversations each assignee (lower-cased email) has."""

    # clients ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def get_client(self, channel: str, client_id: str) -> Client | None:
        """The last known record of a client."""

    @abc.abstractmethod
    def save_client(self, channel: str, client: Client) -> None:
        """Create or replace a client record (keyed by ``client.id``)."""

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        """:meth:`get_conversation` of ``key`` and :meth:`get_client` of the client whose id is
        ``key``, in one call (one statement in the SQL stores): for providers that key a
        conversation by its client's id, and read both for every webhook."""
        return self.get_conversation(channel, key), self.get_client(channel, key)

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        """Conversations as ``query`` selects them, newest activity first (see
        :mod:`rulekit.store.listing`); at most ``query.limit``."""
        raise NotImplementedError(f"{type(self).__name__} cannot list conversations")

    # messages --------------------------------------------------------------------------------
    @abc.abstractmethod
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        """Record a message id; return True when it had not been seen before."""

    @abc.abstractmethod
    def message_seen(self, channel: str, message_id: str) -> bool:
        """Whether a message id was recorded."""

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        """:meth:`mark_message_seen` of each id in order, in one call (one statement in the SQL
        stores): for each, whether it had not been seen before (an id given twice is new the
        first time at most)."""
        return [self.mark_message_seen(channel, message_id) for message_id in message_ids]

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        """Which of ``message_ids`` were recorded (:meth:`message_seen` of each, in one call)."""
        return {message_id for message_id in message_ids if self.message_seen(channel, message_id)}

    # in batches ------------------------------------------------------------------------------
    def read_many(self, wanted: Lookups) -> Found:
        """Conversations (by key and by id), clients and message marks, several at once (see
        :mod:`rulekit.store.lookups`). Stores on a server answer it in one query."""
        found = Found()
        for channel, key in wanted.conversations:
            conversation = self.get_conversation(channel, key)
            found.conversations[channel, key] = (
                (conversation.id, conversation.model_dump_json())
                if conversation is not None
                else None
            )
        for channel, conversation_id in wanted.conversation_ids:
            by_id = self.find_conversation(channel, conversation_id)
            found.conversation_ids[channel, conversation_id] = (
                (by_id[0], by_id[1].model_dump_json()) if by_id is not None else None
            )
        for channel, client_id in wanted.clients:
            client = self.get_client(channel, client_id)
            found.clients[channel, client_id] = (
                client.model_dump_json() if client is not None else None
            )
        for channel, message_id in wanted.messages:
            found.messages[channel, message_id] = self.message_seen(channel, message_id)
        return found

    def write_many(self, saves: Saves) -> set[Key]:
        """Save conversations and clients and mark message ids seen, several at once; the
        message ids that had been seen already (marked meanwhile by someone else). Stores on a
        server make it one statement."""
        for (channel, key), saved in saves.conversations.items():
            self.save_conversation(channel, key, Conversation.model_validate_json(saved.data))
        for (channel, _), data in saves.clients.items():
            self.save_client(channel, Client.model_validate_json(data))
        return {
            (channel, message_id)
            for channel, message_id in sorted(saves.messages)
            if not self.mark_message_seen(channel, message_id)
        }

    # rule guards -----------------------------------------------------------------------------
    @abc.abstractmethod
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        """When the rule's cooldown on this conversation ends, if one was set."""

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        """Every rule's cooldown mark on a conversation (rule name -> end), expired ones too.

        The daemon reads them before evaluating an event outside the store's transaction."""
        raise NotImplementedError(f"{type(self).__name__} cannot list cooldowns")

    def cooldowns_for(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        """:meth:`cooldowns_of` for several conversations (each of them a key, marks or not).
        Stores should answer it in one query."""
        return {conversation: self.cooldowns_of(conversation) for conversation in conversation_ids}

    @abc.abstractmethod
    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        """Start (or extend) a rule's cooldown on a conversation."""

    @abc.abstractmethod
    def next_position(self, key: str, modulo: int) -> int:
        """Advance the counter ``key`` and return its previous value modulo ``modulo``.

        Round-robin assignment uses it; durable stores make it atomic across processes.
        """

    def hold_assignments(self) -> None:  # noqa: B027 - stores whose writers are serialized
        """Until the transaction ends, be the only one (of every daemon on the store) picking
        agents: the open conversations counted against ``max_open`` stay true until the pick
        is saved. Stores that run one writer at a time (SQLite) have nothing to do."""

    # who of the team is online -------------------------------------------------------------
    def set_presence(
        self,
        email: str,
        *,
        status: str | None = None,
        connected_until: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        """Record an agent's presence: their own ``status`` (``online`` or ``away``) and/or
        until when a console stream of theirs counts as connected (the stream renews it).
        What is not given is kept; an agent seen for the first time starts ``online``."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep presence")

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        """Every agent who ever signed in to the console (lower-cased email) with their
        presence at ``now``: ``online``, ``away`` (connected, but said so) or ``offline`` (no
        stream connected lately). Empty until an agent first signs in."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep presence")


class Store(abc.ABC):
    """A place conversation state lives."""

    writers = 1
    """Transactions worth running at once (the daemon's group commit keeps up to this many
    under way): one for a store that writes one at a time (SQLite); a database server commits
    several concurrently, so that one's round trips and flush to disk do not hold up the
    others."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[State]:
        """A unit of work: changes are kept when the block ends normally, dropped on error."""

    def close(self) -> None:  # noqa: B027 - optional for stores with nothing to release
        """Release resources."""

    def checkpoint(self) -> bool:
        """Make what the last transactions erased leave every side file too (SQLite's
        write-ahead log); true when done (stores without side files have nothing to do)."""
        return True

    @property
    def round_trips(self) -> int | None:
        """Round trips to a database server so far (statements, BEGINs and their ends), for
        ``rulekit_store_round_trips_total``; None for a store in the process (SQLite)."""
        return None

    def problem(self) -> str | None:
        """Why the store cannot be used right now, found cheaply without a transaction (e.g.
        its file was replaced), or None. ``/healthz`` fails while there is one."""
        return None


class Journal(abc.ABC):
    """The daemon's durable record: raw webhooks in, what was decided, what was done.

    * the **inbox** holds each webhook body from before its 200 until a processor is done with it;
    * the **audit trail** holds each processed event with the engine's trace;
    * the **outbox** holds the action jobs of each plan, and **attempts** every try of each job.

    Work is *claimed* with a lease (``owner`` names the claimer, e.g. ``host:pid``): a claim that
    is not finished before the lease ends is handed out again, which is how work of a crashed
    daemon is recovered (at-least-once). Methods that take ``now`` use the current time when it
    is ``None``; tests pass it to be exact. JSON arguments (``params``, ``trace``, ``result``)
    must be JSON-ready data and come back as such.
    """

    # inbox -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_inbox(
        self,
        channel: str,
        body: bytes,
        *,
        delivery_key: str | None = None,
        conversation_key: str | None = None,
        now: datetime | None = None,
    ) -> tuple[int, bool]:
        """Keep a webhook body; return ``(inbox id, is_new)``.

        A ``delivery_key`` seen before (a redelivery) keeps nothing and returns the first
        delivery's id with ``is_new`` false; without a key every body is new.

        ``conversation_key`` (e.g. Chatra's client id, when ingest can read it) orders the
        conversation's processing: :meth:`claim_inbox` hands out only the oldest pending item of
        a conversation on a channel, so several processors (threads or daemons) never work on
        two of its events at once nor out of order. Items without one are claimed freely.
        """

    @abc.abstractmethod
    def claim_inbox(
        self, owner: str, *, lease: float, limit: int = 1, now: datetime | None = None
    ) -> list[InboxItem]:
        """Claim up to ``limit`` pending items, oldest first, for ``lease`` seconds.

        Items whose claim is held by anyone (``owner`` included) until after ``now`` are skipped,
        and so are items of a conversation (``conversation_key``) with an older pending item,
        claimed or not; a failed item no longer holds its conversation back. Each claim counts
        one attempt.
        """

    @abc.abstractmethod
    def finish_inbox(self, inbox_id: int, *, error: str | None = None) -> None:
        """Mark an item done, or failed with ``error`` (a poison body, set aside visibly)."""

    def finish_inbox_items(self, inbox_ids: Sequence[int]) -> None:
        """Mark several items done at once (one statement on a database server)."""
        for inbox_id in inbox_ids:
            self.finish_inbox(inbox_id)

    @abc.abstractmethod
    def requeue_inbox(self, inbox_id: int) -> None:
        """Make a failed (or done) item pending again, e.g. after the plugin was fixed."""

    @abc.abstractmethod
    def inbox_items(
        self, *, status: InboxStatus | None = None, limit: int = 100
    ) -> list[InboxItem]:
        """Items with ``status`` (any when ``None``), newest first."""

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        """One inbox item by id (``rulekit why --raw``). Stores should override this scan."""
        for item in self.inbox_items(limit=2**31 - 1):
            if item.id == inbox_id:
                return item
        return None

    # audit trail and outbox ------------------------------------------------------------------
    @abc.abstractmethod
    def record_event(
        self,
        event: Event,
        *,
        inbox_id: int | None,
        trace: Mapping[str, Any],
        jobs: Sequence[JobSpec] = (),
        now: datetime | None = None,
    ) -> bool:
        """Record a processed event and enqueue its plan's jobs (due at once).

        Returns false, recording and enqueueing nothing, when an event with this id was recorded
        before: a redelivered event never runs its actions twice.
        """

    def record_events(self, records: Sequence[NewEvent]) -> list[bool]:
        """:meth:`record_event` for several events, in order: whether each was recorded. Stores
        on a database server make it one statement."""
        return [
            self.record_event(r.event, inbox_id=r.inbox_id, trace=r.trace, jobs=r.jobs)
            for r in records
        ]

    @abc.abstractmethod
    def claim_jobs(
        self, owner: str, *, lease: float, limit: int = 10, now: datetime | None = None
    ) -> list[Job]:
        """Claim up to ``limit`` pending jobs that are due, for ``lease`` seconds: the oldest
        first, or (a store that reads them by its due index, as PostgreSQL's does) the earliest
        due first — which differ only when more jobs are due than ``limit``; each lane still
        runs its jobs in id order (:meth:`start_call` only lets the oldest pending job of a lane
        start).

        Jobs are claimed **by lane** (:attr:`Job.lane`): a lane in which a pending job is held by
        another claimer (a live claim) is skipped whole, and of any other lane only the due
        *prefix* is claimed — its pending jobs in id order up to the first one that is not due
        (a retry waiting for its time). So one claimer at a time holds a lane and gets its jobs
        oldest first (``owner``'s own claims do not hold it back). A job is never held by two
        claimers at once; its claim ends with :meth:`record_attempt` or when the lease
        runs out.
        """

    def start_call(
        self, job_id: int, owner: str, *, lease: float, now: datetime | None = None
    ) -> bool:
        """Record, durably, that ``owner`` is about to call the service for a job; True when it
        may.

        It may when the job is pending, ``owner`` holds its claim (even past the lease, if
        nobody took it over), and no older job of its lane is pending; the claim is then renewed
        for ``lease`` seconds. When an older job of the lane is pending the claim is handed back
        and False returned (the lane's order comes first); when ``owner`` does not hold the
        claim, False. A call started by another claimer and never finished (it died) is counted
        as an attempt (:data:`~rulekit.store.records.INTERRUPTED`) first.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot record calls")

    @abc.abstractmethod
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
        """Record one try of a job, end its call (:meth:`start_call`) and release its claim.

        ``done`` keeps ``result``; ``retry`` makes the job due again at ``retry_at`` (required);
        ``dead`` dead-letters it. A retry with ``hold`` keeps the claim until ``hold`` seconds
        after ``retry_at``: the claimer retries the job itself and no other may take it (or
        the rest of its lane) meanwhile. A job already done or dead keeps its status (a late
        report of a claim whose lease ran out is still recorded as an attempt). Unknown ids
        raise ``KeyError``.
        """

    @abc.abstractmethod
    def requeue_job(self, job_id: int, *, now: datetime | None = None) -> None:
        """Make a dead (or done) job pending and due at ``now``, e.g. from the console."""

    def release_claims(self, owner: str) -> int:
        """Hand back every pending inbox item and job ``owner`` holds, claimable at once (a
        daemon shutting down cleanly); return how many. A crashed daemon's claims run out with
        their lease instead."""
        raise NotImplementedError(f"{type(self).__name__} cannot release claims")

    # leases --------------------------------------------------------------------------------
    def hold_lease(
        self, name: str, owner: str, seconds: float, *, now: datetime | None = None
    ) -> bool:
        """Take the lease ``name`` for ``owner`` until ``seconds`` from now, or renew it; True
        when ``owner`` holds it, False when another owner holds it unexpired. One daemon of
        several does a thing at a time this way (e.g. polling a channel's updates); when it
        stops renewing, the lease runs out and another takes it."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold leases")

    def release_lease(self, name: str, owner: str) -> None:
        """Give up the lease ``name`` if ``owner`` holds it (another may take it at once)."""
        raise NotImplementedError(f"{type(self).__name__} cannot hold leases")

    # timers of timed rules -------------------------------------------------------------------
    def set_timer(
        self,
        rule: str,
        conversation_id: str,
        channel: str,
        due: datetime,
        trigger_event_id: str,
        *,
        restart: bool = False,
        now: datetime | None = None,
    ) -> None:
        """Start ``rule``'s timer for a conversation, due at ``due``, set by an event. A
        pending timer of the same rule and conversation is kept as it is, or with ``restart``
        moved to the new due time and trigger (a claim on it ends: its firing is not
        recorded)."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    def cancel_timers(
        self, rule: str, conversation_id: str, *, by_event: str, now: datetime | None = None
    ) -> int:
        """Cancel ``rule``'s pending timer for a conversation (claimed or not), recording the
        cancelling event; how many were cancelled (0 or 1). Indexed: no scan."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    def next_timer_due(self) -> datetime | None:
        """The earliest due time of the pending timers (one indexed read)."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    def claim_timers(
        self, owner: str, *, lease: float, limit: int = 20, now: datetime | None = None
    ) -> list[Timer]:
        """Claim up to ``limit`` pending timers due by ``now`` (earliest first) that nobody
        else holds, for ``lease`` seconds. Across several daemons a timer is held by one."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    def finish_timer(
        self,
        timer_id: int,
        owner: str,
        outcome: str,
        *,
        reason: str = "",
        at: datetime | None = None,
        event_id: str | None = None,
    ) -> bool:
        """Record a claimed timer's outcome (see :data:`~rulekit.store.records.TimerStatus`);
        False, changing nothing, when it is no longer pending and held by ``owner`` (cancelled
        or restarted meanwhile, or taken over after the lease ran out)."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    def timers(
        self, *, event_id: str | None = None, conversation_id: str | None = None, limit: int = 100
    ) -> list[Timer]:
        """Timers, newest first: those an event set, cancelled or was fired as (``event_id``),
        or those of a conversation."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    # pacing shared by daemons ----------------------------------------------------------------
    shares_pacing: bool = False
    """Whether several daemons use this store at once, so that per-destination pacing must be
    agreed through it (:meth:`reserve_pace`, :meth:`pause_pace`). A store one daemon owns
    (memory, SQLite) leaves pacing to that daemon's in-process
    :class:`rulekit.actions.pacing.Pacer`."""

    def reserve_pace(self, key: str, spacing: float) -> float:
        """Reserve the next send slot of ``key`` (slots at least ``spacing`` seconds apart,
        across every daemon); return how many seconds to wait before using it."""
        return 0.0

    def pause_pace(self, key: str, seconds: float) -> None:  # noqa: B027 - optional
        """Push ``key``'s next slot at least ``seconds`` from now (a Retry-After), for every
        daemon."""

    def paused_for(self, keys: Sequence[str]) -> float:
        """Seconds left of the longest pause (:meth:`pause_pace`) of ``keys``, reading only."""
        return 0.0

    # reading the record ----------------------------------------------------------------------
    @abc.abstractmethod
    def get_event(self, event_id: str) -> EventRecord | None:
        """The audit record of one event (``rulekit why``)."""

    def recorded(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` are recorded. Stores should answer it in one query."""
        return {event_id for event_id in event_ids if self.get_event(event_id) is not None}

    def events_for_jobs(self, event_ids: Sequence[str]) -> dict[str, EventRecord]:
        """The records of those of ``event_ids`` that are recorded, by id, with what executing
        their jobs needs: their ``trace`` may be left empty. Stores should answer it in one
        query."""
        found = (self.get_event(event_id) for event_id in dict.fromkeys(event_ids))
        return {record.event_id: record for record in found if record is not None}

    @abc.abstractmethod
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
        """Recorded events, most recently processed first (``rulekit history``).

        ``rule`` keeps events for which that rule enqueued a job; ``failed`` keeps events with a
        dead job; ``since`` compares with the time of processing.
        """

    @abc.abstractmethod
    def jobs(
        self, *, event_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs of one event (in plan order) or with a status (newest first), or both."""

    def jobs_of_events(self, event_ids: Sequence[str]) -> dict[str, list[Job]]:
        """The jobs of each of ``event_ids`` (in plan order; an event without jobs maps to
        ``[]``). Stores should override this loop with one query: a conversation's view reads
        the jobs of up to 500 events."""
        return {event_id: self.jobs(event_id=event_id, limit=2**31 - 1) for event_id in event_ids}

    def get_job(self, job_id: int) -> Job | None:
        """One job by id. Stores should override this scan."""
        for status in ("dead", "pending", "done"):
            for job in self.jobs(status=status, limit=2**31 - 1):
                if job.id == job_id:
                    return job
        return None

    @abc.abstractmethod
    def attempts(self, job_id: int) -> list[Attempt]:
        """Every attempt of a job, oldest first."""

    def rule_stats(self, *, since: datetime | None = None) -> list[RuleStats]:
        """Per rule (by name), since ``since`` (everything retention kept when None): events
        matched and when it last fired, its jobs by status (of events processed since then),
        and failed attempts. Rules with nothing to count are not listed."""
        raise NotImplementedError(f"{type(self).__name__} cannot count per rule")

    def conversation_events(
        self, channel: str, conversation_id: str, *, limit: int = 200
    ) -> list[EventRecord]:
        """The recorded events of one conversation, most recently processed first (read by
        the conversation's index, however long the channel's history)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list a conversation's events")

    # privacy and retention -------------------------------------------------------------------
    def forget_client(self, client_id: str, *, channel: str | None = None) -> dict[str, int]:
        """Erase a client's personal data (``rulekit forget``); return what was erased, by kind.

        The client is ``client_id`` on ``channel`` (on every channel when ``None``). Personal
        values and the forms they are found in are defined in :mod:`rulekit.store.erasure`;
        stores implement it as :func:`rulekit.store.erasure.forget_client` over their
        :class:`~rulekit.store.erasure.ForgetRows`. Erased:

        * ``clients``: the client records (deleted);
        * ``events``: audit records whose event's ``client.id`` is the client: the client
          fields except ``id`` are blanked, the message text and conversation page removed,
          and every other string of the record (trace included) holding a personal value in
          any stored form is replaced;
        * ``messages``: of those events, how many had a message text (now gone);
        * ``payloads``: done or failed inbox items of those events, of the client's
          conversation or whose body names the client id: bodies emptied, errors scrubbed
          (pending ones are left for the processor);
        * ``jobs`` and ``attempts``: jobs of those events and their attempts whose params,
          result or error held a personal value, scrubbed the same way;
        * ``conversations``: conversations of those events (or keyed by the client id) whose
          page was cleared or another field scrubbed.

        Every kind is in the result, with 0 when nothing was found. Ids (the client id, a
        pseudonym, included), times, statuses and rule names stay, so the audit trail still
        shows that something happened. Call :meth:`Store.checkpoint` after the transaction.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot forget clients yet")

    def purge(
        self, *, events_before: datetime, payloads_before: datetime, batch: int | None = None
    ) -> dict[str, int]:
        """Delete what retention no longer keeps; return how much, by kind. With ``batch``, at
        most that many of each kind (events, inbox items, payloads): call it again, in a new
        transaction, while any count reaches it.

        * ``events``: audit records processed before ``events_before`` with no pending job,
          together with their ``jobs`` and ``attempts`` (counted too);
        * ``inbox``: done or failed inbox items received before ``events_before`` (deleted);
        * ``payloads``: bodies of done or failed inbox items received before
          ``payloads_before``, emptied (the item's metadata stays).

        Pending work is never purged. Conversation state (clients, conversations, seen
        message ids, cooldowns) is not touched: ``forget_client`` erases a client's.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot purge yet")


class JournaledState(State, Journal):
    """What one transaction of a store with a journal can read and change."""

    def begin_call(
        self,
        job_id: int,
        owner: str,
        *,
        lease: float,
        paused: Sequence[str] = (),
        conversation: tuple[str, str] | None = None,
    ) -> CallStart:
        """What the dispatcher asks the store right before a call, at once: when none of the
        ``paused`` keys is paused (:meth:`paused_for`), :meth:`start_call`; when the call
        starts and ``conversation`` (channel, id) is given, the conversation as stored
        (:meth:`find_conversation`). Stores on a database server make it one statement."""
        wait = self.paused_for(paused) if paused else 0.0
        if wait > 0:
            return CallStart(False, wait)
        if not self.start_call(job_id, owner, lease=lease):
            return CallStart(False)
        found = None
        if conversation is not None:
            try:
                found = self.find_conversation(*conversation)
            except NotImplementedError:
                found = None
        return CallStart(True, 0.0, found[1] if found is not None else None)


class JournaledStore(Store):
    """A store whose transactions cover both the conversation state and the journal."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[JournaledState]:
        """A unit of work over state and journal: kept when the block ends normally, dropped on
        error. Blocks must not do slow I/O (HTTP calls): writers are serialized."""

    def listen(self, notify: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``notify(queue)`` (from another thread) when another process added work anyone
        may claim now: ``"inbox"``, ``"outbox"`` or ``"timers"``; also once when listening
        (re)starts, for what was added meanwhile. Returns what stops listening, or None when
        the store cannot tell (then the daemon only polls)."""
        return None

    def reading(self) -> AbstractContextManager[JournaledState]:
        """A unit of work that only reads (the console): it never holds writers back where the
        store can avoid it (SQLite reads a snapshot on a connection of its own). Changes made
        in it are an error or dropped. By default, a :meth:`transaction`."""
        return self.transaction()
