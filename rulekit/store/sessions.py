"""The journal's console sign-ins: the browsers' sessions and the sign-in throttle's counts.

Both live in the store so that every daemon on it sees the same: a browser signed in on one
daemon is signed in on all of them (and after a restart), a sign-out or a revoked token ends
the session on all of them, and failed sign-ins spread over several daemons are counted
together.

* A **session** row holds the SHA-256 of the session id (never the id the browser holds: a
  copy of the table signs nobody in), the SHA-256 of the token it was opened with (the hash the
  config keeps, to check on each request that the token is still valid), its order of opening
  and until when it lasts unless used again. Nothing in it names a person or a client.
* A **sign-in failure** row holds a keyed hash of a client address (its key is the store's, see
  :meth:`~rulekit.store.base.JournaledState.log_key`: the table does not list addresses), how
  many sign-ins from it failed, when the last did and until when it must wait; one more row is
  the budget of failures of all addresses together.

Times are seconds since the epoch, by the database's clock on a store that several daemons
share (PostgreSQL: pass no ``now``), else by the caller's. Expired rows are deleted by
retention (:meth:`purge_console`), a bounded batch at a time.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

SIGN_IN_FORGET_AFTER = 3600.0
"""Seconds after its last failure that an address's failures are forgotten."""


@dataclass(frozen=True)
class SignInFailures:
    """The failed sign-ins of one address."""

    count: int
    last: float
    """When the last one failed."""
    until: float
    """Until when the address must wait before its next sign-in."""


@dataclass(frozen=True)
class SignInBudget:
    """Failed sign-ins all addresses together may still make: ``tokens``, as of ``filled_at``
    (None: never drawn from, full)."""

    tokens: float | None
    filled_at: float | None


@dataclass(frozen=True)
class SignInState:
    """What the throttle reads of one address, and the time it was read at."""

    failures: SignInFailures | None
    budget: SignInBudget
    now: float


class ConsoleSessions:
    """The console part of :class:`rulekit.store.base.Journal`."""

    # sessions ----------------------------------------------------------------------------------
    def open_console_session(
        self,
        session_hash: str,
        credential: str,
        *,
        idle: float,
        per_credential: int,
        most: int,
        now: float | None = None,
    ) -> list[str]:
        """Open a session (``session_hash``: the SHA-256 of its id) of the token whose SHA-256
        is ``credential``, lasting ``idle`` seconds unless used. The credential's oldest
        sessions beyond ``per_credential`` end, then the oldest of all beyond ``most``: the
        hashes of those that ended."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep console sessions")

    def console_session(
        self, session_hash: str, *, now: float | None = None, max_age: float | None = None
    ) -> tuple[str, float] | None:
        """The credential of the live session ``session_hash`` and the seconds of idle time it
        has left, or None (none, it ran out, or it was opened more than ``max_age`` seconds
        ago)."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep console sessions")

    def extend_console_session(
        self, session_hash: str, *, idle: float, now: float | None = None
    ) -> None:
        """The session ``session_hash`` was used: it lasts ``idle`` seconds from now (unless it
        ran out already)."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep console sessions")

    def close_console_sessions(
        self, *, session_hash: str | None = None, credentials: Collection[str] | None = None
    ) -> int:
        """End the session ``session_hash``, or every session of ``credentials``, or (neither
        given) every session; how many ended."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep console sessions")

    # sign-in throttle --------------------------------------------------------------------------
    def sign_in_state(
        self, address: str, *, lock: bool = False, now: float | None = None
    ) -> SignInState:
        """The failures of ``address`` (a hash of it) and the budget of all addresses; with
        ``lock``, both are held until the transaction ends (a store several daemons share:
        another daemon's failure waits, then reads what this one wrote)."""
        raise NotImplementedError(f"{type(self).__name__} cannot throttle sign-ins")

    def save_sign_in_state(
        self, address: str, failures: SignInFailures | None, budget: SignInBudget | None = None
    ) -> None:
        """Keep ``failures`` for ``address`` (None: forget its failures) and the ``budget``
        when given."""
        raise NotImplementedError(f"{type(self).__name__} cannot throttle sign-ins")

    def purge_console(self, *, batch: int, now: float | None = None) -> int:
        """Delete up to ``batch`` sessions that ran out and up to ``batch`` addresses whose last
        failure is older than :data:`SIGN_IN_FORGET_AFTER`; how many rows went."""
        raise NotImplementedError(f"{type(self).__name__} cannot keep console sessions")
