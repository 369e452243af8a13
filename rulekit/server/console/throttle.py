"""Sign-in throttling: growing waits per client address, and a budget for the whole console.

* **Per address.** After :data:`FREE_FAILURES` failed sign-ins from one address, each further
  failure makes the address wait before its next attempt: 1 s, then 2, 4, 8 … up to
  :data:`MAX_WAIT`. A successful sign-in clears the address; so does an hour without failures.
  IPv6 addresses count per /64 network (what one host usually holds).
* **For everyone.** Failed sign-ins from all addresses take from one bucket of
  :data:`GLOBAL_BURST` that refills at :data:`GLOBAL_RATE` per second: many addresses together
  cannot try more than that. While it is empty every sign-in waits, which is the only way the
  failures of other addresses can hold a sign-in up.

While an address (or everyone) must wait, a sign-in is refused without looking at its token.

The counts live in the store (:mod:`rulekit.store.sessions`), so failures made on several
daemons of one store are counted together and a restart keeps them. An attempt reads them
first (a valid token, found while nobody must wait, writes nothing unless it clears its
address); a failure is counted in a transaction that reads them again, locked, so that
failures on several daemons at once are counted one after another and none gets a try more
than the limits allow. The store holds a keyed hash of the address, not the address; times
are the database's on a shared store (PostgreSQL), else the injectable clock's (seconds since
the epoch).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from rulekit.store.sessions import (
    SIGN_IN_FORGET_AFTER,
    SignInBudget,
    SignInFailures,
    SignInState,
)

if TYPE_CHECKING:
    from rulekit.store.base import JournaledStore

FREE_FAILURES = 5
FIRST_WAIT = 1.0
MAX_WAIT = 900.0
FORGET_AFTER = SIGN_IN_FORGET_AFTER
GLOBAL_BURST = 60.0
GLOBAL_RATE = 1.0

T = TypeVar("T")


def address_key(address: str | None) -> str:
    """What one client is counted as: its IPv4 address, its IPv6 /64 network, or the text."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def must_wait(state: SignInState) -> tuple[float, str]:
    """Seconds before a sign-in may be tried given ``state`` (0: now), and why (``address`` or
    ``global``)."""
    now = state.now
    failures = state.failures
    own = failures.until - now if failures is not None and failures.until > now else 0.0
    tokens = _tokens(state.budget, now)
    everyone = 0.0 if tokens >= 1 else (1 - tokens) / GLOBAL_RATE
    if own >= everyone:
        return own, "address"
    return everyone, "global"


def after_failure(state: SignInState) -> tuple[SignInFailures, SignInBudget]:
    """The address's failures and everyone's budget once one more sign-in failed."""
    now = state.now
    budget = SignInBudget(max(0.0, _tokens(state.budget, now) - 1), now)
    failures = state.failures
    if failures is None or now - failures.last > FORGET_AFTER:
        failures = SignInFailures(0, now, now)
    count = failures.count + 1
    until = failures.until
    if count >= FREE_FAILURES:
        until = now + min(MAX_WAIT, FIRST_WAIT * 2 ** (count - FREE_FAILURES))
    return SignInFailures(count, now, until), budget


def _tokens(budget: SignInBudget, now: float) -> float:
    if budget.tokens is None or budget.filled_at is None:
        return GLOBAL_BURST
    elapsed = max(0.0, now - budget.filled_at)
    return min(GLOBAL_BURST, budget.tokens + elapsed * GLOBAL_RATE)


@dataclass(frozen=True)
class Attempt(Generic[T]):
    """How a sign-in went: the wait it was refused with (0: it was tried), why, and what the
    check of its token found (None: nothing, or it was not tried)."""

    wait: float
    reason: str
    found: T | None = None


class SignInThrottle:
    """Decides whether a sign-in may be tried now and counts its outcome, in ``store``."""

    def __init__(self, store: JournaledStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        """Seconds since the epoch, where the store has no clock of its own (SQLite)."""
        self._key: bytes | None = None
        self._key_lock = threading.Lock()

    async def attempt(
        self, address: str | None, check: Callable[[], T | None], *, clear: bool = True
    ) -> Attempt[T]:
        """Try a sign-in from ``address``: unless it must wait, ``check()`` looks at its token
        (what it finds, None for a wrong token); a wrong one is counted for the address and for
        everyone, a right one clears the address when ``clear``. Raises
        :class:`~rulekit.errors.StoreUnavailable` when the store cannot say."""
        return await run_in_threadpool(self._attempt, address_key(address), check, clear)

    def _attempt(self, address: str, check: Callable[[], T | None], clear: bool) -> Attempt[T]:
        key = self._hashed(address)
        now = None if self.store.shared else self.clock()
        with self.store.reading() as state:
            seen = state.sign_in_state(key, now=now)
        wait, reason = must_wait(seen)
        if wait > 0:  # refused without looking at the token
            return Attempt(wait, reason)
        found = check()
        if found is not None:
            if clear and seen.failures is not None:
                with self.store.transaction() as state:
                    state.save_sign_in_state(key, None)
            return Attempt(0.0, "", found)
        with self.store.transaction() as state:
            # read again, held: failures counted meanwhile (on any daemon) may make this one
            # a sign-in that had to wait
            seen = state.sign_in_state(key, lock=True, now=now)
            wait, reason = must_wait(seen)
            if wait > 0:
                return Attempt(wait, reason)
            failures, budget = after_failure(seen)
            state.save_sign_in_state(key, failures, budget)
        return Attempt(0.0, "")

    def _hashed(self, address: str) -> str:
        """The address as the store keeps it: keyed with the store's own key (the one its logs
        hash ids with), so that the table does not list the addresses that signed in."""
        with self._key_lock:
            if self._key is None:
                with self.store.transaction() as state:
                    self._key = state.log_key(make=True)
            key = self._key
        assert key is not None
        return hmac.new(key, b"console-sign-in\0" + address.encode(), hashlib.sha256).hexdigest()


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value for a wait (whole seconds, at least 1)."""
    return str(max(1, math.ceil(seconds)))
