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
The clock is injectable (monotonic seconds).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE_FAILURES = 5
FIRST_WAIT = 1.0
MAX_WAIT = 900.0
FORGET_AFTER = 3600.0
GLOBAL_BURST = 60.0
GLOBAL_RATE = 1.0
MAX_ADDRESSES = 10_000


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


@dataclass
class _Failures:
    count: int
    last: float
    until: float


class SignInThrottle:
    """Decides whether a sign-in may be tried now (:meth:`wait`) and learns from its outcome
    (:meth:`failed`, :meth:`succeeded`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()
        self._tokens = GLOBAL_BURST
        self._filled_at: float | None = None

    def wait(self, address: str | None) -> tuple[float, str]:
        """Seconds before a sign-in from ``address`` may be tried (0: now), and why
        (``address`` or ``global``)."""
        now = self.clock()
        entry = self._addresses.get(address_key(address))
        own = entry.until - now if entry is not None and entry.until > now else 0.0
        tokens = self._refill(now)
        everyone = 0.0 if tokens >= 1 else (1 - tokens) / GLOBAL_RATE
        if own >= everyone:
            return own, "address"
        return everyone, "global"

    def failed(self, address: str | None) -> None:
        """A sign-in from ``address`` was refused: count it for the address and for everyone."""
        now = self.clock()
        self._tokens = max(0.0, self._refill(now) - 1)
        key = address_key(address)
        entry = self._addresses.pop(key, None)
        if entry is None or now - entry.last > FORGET_AFTER:
            entry = _Failures(0, now, now)
        entry.count += 1
        entry.last = now
        if entry.count >= FREE_FAILURES:
            entry.until = now + min(MAX_WAIT, FIRST_WAIT * 2 ** (entry.count - FREE_FAILURES))
        self._addresses[key] = entry  # newest last
        while len(self._addresses) > MAX_ADDRESSES:
            self._addresses.popitem(last=False)

    def succeeded(self, address: str | None) -> None:
        """A sign-in from ``address`` succeeded: its failures are forgotten."""
        self._addresses.pop(address_key(address), None)

    def _refill(self, now: float) -> float:
        if self._filled_at is not None:
            elapsed = max(0.0, now - self._filled_at)
            self._tokens = min(GLOBAL_BURST, self._tokens + elapsed * GLOBAL_RATE)
        self._filled_at = now
        return self._tokens


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value for a wait (whole seconds, at least 1)."""
    return str(max(1, math.ceil(seconds)))
