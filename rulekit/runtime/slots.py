"""The dispatcher's call slots: at most ``dispatcher.concurrency`` calls under way at once, and
at most a share of them for one service (:class:`ServiceShares`).

The number follows the configuration loaded now: a reload that raises it lets calls waiting
for a slot go at once, and one that lowers it lets no call start until fewer than the new
number are under way (none is cut off). It is also the bound on the calls one crashed daemon
makes again (docs/operations.md, "The duplicate bound"), so a lowered number applies at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from rulekit.actions.pacing import Pace


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


class ServiceShares:
    """Each service's share of the call slots: at most :attr:`limit` calls to one service under
    way at once, so that one service that hangs (it takes connections and never answers) holds
    at most that many slots until its calls time out, and calls to every other service keep
    going in the rest (a quarter of the slots). A call waits for its service's share before it
    takes a slot; waiting holds none.

    A service is what a call's paces name with the scope ``service`` (a Slack workspace, a
    Telegram bot, a channel's account), else the destination an action paces itself by (a
    webhook target), else the action (:func:`service_of`). With fewer than four slots there is
    no quarter to keep apart, and one service may take them all."""

    def __init__(self, slots: CallSlots) -> None:
        self.slots = slots
        self.used: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def limit(self) -> int:
        """Calls one service may have under way: all the slots but a quarter (rounded down: with
        fewer than four slots, all of them)."""
        size = self.slots.size
        return max(1, size - size // 4)

    def room(self) -> int:
        """Calls the busiest service may still start: how many calls a claim may start at once
        whatever their services (:meth:`CallSlots.take_free`)."""
        return max(0, self.limit - max(self.used.values(), default=0))

    def try_take(self, service: str) -> bool:
        """Take a place in ``service``'s share if one is free and nobody waits for one."""
        if self.used.get(service, 0) >= self.limit or self._waiters.get(service):
            return False
        self.used[service] = self.used.get(service, 0) + 1
        return True

    async def take(self, service: str) -> None:
        """Take a place in ``service``'s share, waiting for one first (in order)."""
        if self.try_take(service):
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(service, deque()).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a place, cancelled since
                self.give_back(service)
            raise
        finally:
            waiters = self._waiters.get(service)
            if waiters is not None and not waiters:
                del self._waiters[service]

    def give_back(self, service: str) -> None:
        """Give back a place taken in ``service``'s share."""
        left = self.used.get(service, 0) - 1
        if left > 0:
            self.used[service] = left
        else:
            self.used.pop(service, None)
        self._wake(service)

    def _wake(self, service: str) -> None:
        waiters = self._waiters.get(service)
        while waiters and self.used.get(service, 0) < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():  # (a cancelled one is done)
                self.used[service] = self.used.get(service, 0) + 1
                waiter.set_result(None)

    def resized(self) -> None:
        """The slots were resized (a reload): waiters a larger share has room for go."""
        for service in list(self._waiters):
            self._wake(service)


def service_of(paces: Sequence[Pace], own: Sequence[Pace], action: str) -> str:
    """The service a call with ``paces`` goes to, for :class:`ServiceShares`: the key of its
    last pace of scope ``service``, else the destination of the action's own pacing (``own``),
    else the action's name."""
    for pace in reversed(paces):
        if pace.scope == "service":
            return pace.key
    return own[0].key if own else action
