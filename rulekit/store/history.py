"""The journal's audit record read back (``rulekit why``, ``history``, the console, per-rule
counts), and erased from (``rulekit forget``, retention): see :class:`History`.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime

from rulekit.store.erasure import ERASED_MARK
from rulekit.store.records import Attempt, EventRecord, Job, JobStatus, RuleStats


class NotInConversation(LookupError):
    """A cursor naming an event that is not one of the conversation's (or no longer stored)."""


class History(abc.ABC):
    """The audit-record part of :class:`rulekit.store.base.Journal`."""

    # reading the record ----------------------------------------------------------------------
    @abc.abstractmethod
    def get_event(self, event_id: str) -> EventRecord | None:
        """The audit record of one event (``rulekit why``)."""

    def recorded(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` are recorded. Stores should answer it in one query."""
        return {event_id for event_id in event_ids if self.get_event(event_id) is not None}

    def events_for_jobs(
        self,
        event_ids: Sequence[str],
        *,
        held: Collection[str] = (),
        budget: int | None = None,
    ) -> dict[str, EventRecord]:
        """The records of those of ``event_ids`` that are recorded, by id, with what executing
        their jobs needs and the length of their data (``size``): their ``trace`` may be left
        empty, and so may the ``data`` of those in ``held`` (events the caller already has),
        unless an erasure marked their trace since (:data:`~rulekit.store.erasure.ERASED_MARK`):
        then it is read, whatever the budget. With a ``budget``, the data of the others is
        read, oldest event first, only while their sizes together fit in it; the rest's is
        left empty. Stores should answer it in one query."""
        found = (self.get_event(event_id) for event_id in dict.fromkeys(event_ids))
        records = sorted(
            (record for record in found if record is not None), key=lambda r: r.processed_at
        )
        out = {}
        for record in records:
            size = len(json.dumps(record.data, ensure_ascii=False, separators=(",", ":")))
            data = record.data
            if record.event_id in held and not record.trace.get(ERASED_MARK):
                data = {}
            elif budget is not None:
                if size > budget:
                    data, budget = {}, 0
                else:
                    budget -= size
            out[record.event_id] = replace(record, data=data, size=size)
        return out

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
        before: str | None = None,
    ) -> list[EventRecord]:
        """Recorded events, most recently processed first (``rulekit history``).

        ``rule`` keeps events for which that rule enqueued a job; ``failed`` keeps events with a
        dead job; ``since`` compares with the time of processing; ``before`` keeps the events
        recorded before that one (the next page of a listing that ended with it).
        """

    @abc.abstractmethod
    def jobs(
        self, *, event_id: str | None = None, status: JobStatus | None = None, limit: int = 100
    ) -> list[Job]:
        """Jobs of one event (in plan order) or with a status (newest first), or both."""

    def dead_jobs(self, *, channels: Collection[str] | None, limit: int = 100) -> list[Job]:
        """Dead jobs of events of ``channels`` (every channel when None), newest first: the
        dead letters an agent may see. Stores should override this scan with one query (a
        filter after the limit lost an agent's dead letters behind a busier channel's)."""
        if channels is None:
            return self.jobs(status="dead", limit=limit)
        found = []
        for job in self.jobs(status="dead", limit=2**31 - 1):
            record = self.get_event(job.event_id)
            if record is not None and record.channel in channels:
                found.append(job)
                if len(found) >= limit:
                    break
        return found

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
        self,
        channel: str,
        conversation_id: str,
        *,
        limit: int = 200,
        before: str | None = None,
        after: str | None = None,
    ) -> list[EventRecord]:
        """The recorded events of one conversation, most recently processed first (read by
        the conversation's index, however long the channel's history).

        ``before`` (an event id): only the events processed before that event, most recent
        first; ``after``: only those processed after it, oldest first. Either event must be
        one of this conversation's (:class:`NotInConversation` otherwise): a page read by
        such a cursor neither skips nor repeats events when new ones arrive meanwhile."""
        raise NotImplementedError(f"{type(self).__name__} cannot list a conversation's events")

    def conversation_page(
        self,
        channel: str,
        conversation_id: str,
        *,
        limit: int,
        budget: int,
        before: str | None = None,
        after: str | None = None,
    ) -> tuple[list[EventRecord], bool]:
        """A page of :meth:`conversation_events` (same order and cursors): at most ``limit``
        events, and only as many as fit together in ``budget`` characters of stored data and
        trace (always the first), the others not read; and whether more followed. Stores
        should override this: it reads ``limit + 1`` events whole."""
        found = self.conversation_events(
            channel, conversation_id, limit=limit + 1, before=before, after=after
        )
        fitting: list[EventRecord] = []
        total = 0
        for record in found[:limit]:
            total += len(json.dumps(record.data)) + len(json.dumps(record.trace))
            if fitting and total > budget:
                break
            fitting.append(record)
        return fitting, len(found) > len(fitting)

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
          result, error (or, for a job, destination or lane) held a personal value, scrubbed
          the same way;
        * ``conversations``: conversations of those events (or keyed by the client id) whose
          page was cleared or another field scrubbed.

        The console's request keys about those conversations go too (with the answers kept
        for their retries); they are not counted.

        Every kind is in the result, with 0 when nothing was found. Ids (the client id, a
        pseudonym, included), times, statuses and rule names stay, so the audit trail still
        shows that something happened. Call :meth:`Store.checkpoint` after the transaction.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot forget clients yet")

    def purge(
        self, *, events_before: datetime, payloads_before: datetime, batch: int | None = None
    ) -> dict[str, int]:
        """Delete what retention no longer keeps; return how much, by kind. With ``batch``, at
        most that many of each kind (events, timers, inbox items, payloads): call it again, in
        a new transaction, while any count reaches it.

        * ``events``: audit records processed before ``events_before`` with no pending job,
          together with their ``jobs`` and ``attempts`` (counted too);
        * ``timers``: timers that ended (fired, cancelled, dropped, failed) before
          ``events_before``: their reasons may quote what a rule read of the client;
        * ``inbox``: done or failed inbox items received before ``events_before`` (deleted);
        * ``payloads``: bodies of done inbox items received before ``payloads_before``,
          emptied (the item's metadata stays).

        Pending work is never purged, and a set-aside (failed) item keeps its body until it
        is deleted: it waits for a person to requeue it. Shared pacing whose slot passed over
        an hour ago is forgotten (:meth:`~rulekit.store.outbox.Outbox.forget_past_paces`, not
        counted). Conversation state (clients,
        conversations, seen message ids, cooldowns) is not touched: ``forget_client`` erases a
        client's.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot purge yet")
