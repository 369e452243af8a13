"""The journal's timers of timed rules: set by an event, cancelled by another, claimed when due
(see :class:`Timers`).
"""

from __future__ import annotations

from datetime import datetime

from rulekit.store.records import Timer


class Timers:
    """The timers part of :class:`rulekit.store.base.Journal` (stores without timers raise
    ``NotImplementedError``)."""

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

    def timers_clock(self) -> datetime | None:
        """The time by the store's own clock where the store keeps the time of several daemons
        (PostgreSQL: the database's clock, which :meth:`claim_timers` goes by when given no
        ``now``); None where the caller's clock is the store's (one daemon's SQLite file)."""
        return None

    def claim_timers(
        self, owner: str, *, lease: float, limit: int = 20, now: datetime | None = None
    ) -> list[Timer]:
        """Claim up to ``limit`` pending timers due by ``now`` (earliest first) that nobody
        else holds, for ``lease`` seconds. Across several daemons a timer is held by one.
        Without ``now``: the store's clock (:meth:`timers_clock`), else this machine's."""
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

    def hand_back_timer(self, timer_id: int, owner: str, *, until: datetime) -> bool:
        """Give up ``owner``'s claim of a pending timer, which nobody claims again before
        ``until`` (``owner``, where several daemons share the store, for longer: another gets it
        first); False, changing nothing, when it is no longer pending and held by ``owner``."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")

    def timers(
        self, *, event_id: str | None = None, conversation_id: str | None = None, limit: int = 100
    ) -> list[Timer]:
        """Timers, newest first: those an event set, cancelled or was fired as (``event_id``),
        or those of a conversation."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep timers")
