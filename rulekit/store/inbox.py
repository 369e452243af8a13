"""The journal's inbox: each webhook body kept from before its 200 until a processor is done.

Items are claimed with a lease, one conversation's items in order (see :class:`Inbox`).
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime

from rulekit.store.records import InboxItem, InboxStatus


class Inbox(abc.ABC):
    """The inbox part of :class:`rulekit.store.base.Journal`."""

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
        self,
        owner: str,
        *,
        lease: float,
        limit: int = 1,
        now: datetime | None = None,
        budget: int | None = None,
    ) -> list[InboxItem]:
        """Claim up to ``limit`` pending items, oldest first, for ``lease`` seconds; with a
        ``budget``, only as many as have bodies of at most ``budget`` bytes together (the first
        one whatever its size).

        Items whose claim is held by anyone (``owner`` included) until after ``now`` are skipped,
        and so are items of a conversation (``conversation_key``) with an older pending item,
        claimed or not; a failed item no longer holds its conversation back. Each claim counts
        one attempt.
        """

    @abc.abstractmethod
    def finish_inbox(
        self, inbox_id: int, *, error: str | None = None, owner: str | None = None
    ) -> None:
        """Mark an item done, or failed with ``error`` (a poison body, set aside visibly).

        With ``owner``, only while ``owner`` holds the item's claim: an item another daemon
        claimed since (``owner``'s claim ran out while it was held up) or finished raises
        :class:`~rulekit.errors.ClaimLost`, and what the transaction recorded of it is to be
        dropped with it."""

    def finish_inbox_items(self, inbox_ids: Sequence[int], *, owner: str | None = None) -> None:
        """Mark several items done at once (one statement on a database server); with
        ``owner``, as :meth:`finish_inbox` (:class:`~rulekit.errors.ClaimLost` names every item
        lost)."""
        for inbox_id in inbox_ids:
            self.finish_inbox(inbox_id, owner=owner)

    @abc.abstractmethod
    def requeue_inbox(self, inbox_id: int, *, only_from: InboxStatus | None = None) -> bool:
        """Make a failed (or done) item pending again, e.g. after the plugin was fixed; whether
        it did. With ``only_from``, only an item in that status, checked by the change itself
        (of two requeues at once, the second finds it pending or processed and leaves it).
        :class:`KeyError` when no item has the id."""

    @abc.abstractmethod
    def inbox_items(
        self,
        *,
        status: InboxStatus | None = None,
        limit: int = 100,
        channels: Collection[str] | None = None,
    ) -> list[InboxItem]:
        """Items with ``status`` (any when ``None``) of ``channels`` (any when ``None``),
        newest first."""

    def inbox_heads(
        self,
        head: int,
        *,
        status: InboxStatus | None = None,
        limit: int = 100,
        channels: Collection[str] | None = None,
    ) -> list[tuple[InboxItem, int]]:
        """:meth:`inbox_items`, each with its body cut to its first ``head`` bytes, and the
        whole body's size: what a listing shows of them. Stores should read only the heads."""
        items = self.inbox_items(status=status, limit=limit, channels=channels)
        return [(replace(item, body=item.body[:head]), len(item.body)) for item in items]

    def inbox_waiting(self, channel: str, conversation_key: str, *, received_by: datetime) -> bool:
        """Whether an item of the conversation received by ``received_by`` is still pending (a
        webhook acknowledged but not processed yet). Stores should override this scan."""
        return any(
            item.conversation_key == conversation_key and item.received_at <= received_by
            for item in self.inbox_items(status="pending", limit=2**31 - 1, channels=[channel])
        )

    def get_inbox(self, inbox_id: int) -> InboxItem | None:
        """One inbox item by id (``rulekit why --raw``). Stores should override this scan."""
        for item in self.inbox_items(limit=2**31 - 1):
            if item.id == inbox_id:
                return item
        return None
