"""Fencing a claim: work claimed with a lease is not acted on once the lease may have run out
and another daemon taken the work over.

A daemon can be held up for any length of time between taking a claim and acting on it: a long
garbage collection, a VM migrated or paused, a laptop's lid closed, ``SIGSTOP``. Its claim runs
out meanwhile, another daemon takes the work over and does it; the first must not then do it
again on its stale claim. So before acting on a claim (a call leaving), a daemon whose own clock
shows that more than :data:`FENCE` of the lease passed since the claim was taken or last
renewed asks the store again whether it still holds it (renewing it); the store's writes that
conclude the work are conditional on the claim besides.

The clock is one that counts the time the machine was suspended too (``CLOCK_BOOTTIME`` where
there is one): a monotonic clock that stops while the machine sleeps would not show the pause
of a closed lid.
"""

from __future__ import annotations

import time

FENCE = 2 / 3
"""The share of its lease after which a claim is checked in the store before it is acted on:
the rest is the margin for what the clocks of the daemon and the database may disagree on and
for the moment between the check and the act."""

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def lease_clock() -> float:
    """Seconds of a clock that never goes back and goes on while the machine is suspended."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


class Hold:
    """When a claim was last known held: taken or renewed (the time read before the store was
    asked, so that the lease the store counted from began after it)."""

    def __init__(self, since: float, lease: float) -> None:
        self.since = since
        self.lease = lease

    def renewed(self, since: float) -> None:
        """The claim was renewed by a statement sent at ``since``."""
        self.since = max(self.since, since)

    def doubtful(self) -> bool:
        """Whether enough of the lease passed that another daemon may have the work by now."""
        return lease_clock() - self.since > self.lease * FENCE
