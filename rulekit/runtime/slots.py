"""The dispatcher's call slots: at most ``dispatcher.concurrency`` calls under way at once.

The number follows the configuration loaded now: a reload that raises it lets calls waiting
for a slot go at once, and one that lowers it lets no call start until fewer than the new
number are under way (none is cut off). It is also the bound on the calls one crashed daemon
makes again (docs/operations.md, "The duplicate bound"), so a lowered number applies at once.
"""

from __future__ import annotations

import asyncio
from collections import deque


class CallSlots:
    """``size`` slots; ``async with slots:`` holds one, waiting for one first (in order)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.used = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        # whenever fewer than ``size`` are used, nobody waits (_wake keeps it so)

    async def __aenter__(self) -> None:
        if self.used < self.size:
            self.used += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, cancelled since
                self.used -= 1
                self._wake()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.used -= 1
        self._wake()

    def take_free(self, most: int) -> int:
        """Take up to ``most`` free slots at once, without waiting (none while anybody
        waits); how many. Each is given back with :meth:`give_back`."""
        taken = max(0, min(most, self.size - self.used)) if not self._waiters else 0
        self.used += taken
        return taken

    def give_back(self, count: int = 1) -> None:
        """Give back ``count`` slots taken with :meth:`take_free`."""
        self.used -= count
        self._wake()

    def resize(self, size: int) -> None:
        """Make it ``size`` slots (calls under way go on either way)."""
        self.size = size
        self._wake()

    def _wake(self) -> None:
        """Hand the free slots to the oldest waiters."""
        while self._waiters and self.used < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():  # (a cancelled one is done)
                self.used += 1
                waiter.set_result(None)
