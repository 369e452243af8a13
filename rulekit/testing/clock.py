"""An event loop on virtual time, for exact tests of timeouts, pacing and backoff.

Code under test reads the time from its event loop (``asyncio.sleep``, ``asyncio.timeout``,
``loop.call_later``, the pacer, aiohttp's and httpx's timeouts all do). On a
:class:`VirtualTimeLoop` that time starts at 0 and moves only when the loop has nothing to do
but wait: it then jumps straight to the next timer. A test can therefore assert exact times
(``loop.time() == 0.5``), and they hold however slow or busy the machine is::

    from rulekit.testing.clock import run_virtual

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await asyncio.sleep(60)
        return loop.time()

    assert run_virtual(scenario()) == 0.5

Real input and output still happen: with ``io_grace`` the loop first waits up to that many real
seconds for a socket to become ready before it lets virtual time jump (for tests that talk to a
server on loopback, so the request is on its way before a timeout fires).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FileObject = int | _HasFileno
"""What a selector watches: a file descriptor, or an object with ``fileno()``."""


class _JumpingSelector(selectors.BaseSelector):
    """The platform's selector, except that waiting for a timer jumps the loop's clock."""

    def __init__(self, loop: VirtualTimeLoop, io_grace: float) -> None:
        self._loop = loop
        self._io_grace = io_grace
        self._real = selectors.DefaultSelector()

    def register(self, fileobj: FileObject, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileObject) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: FileObject, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:  # no timer to jump to, or nothing to wait for
            return self._real.select(timeout)
        ready = self._real.select(min(timeout, self._io_grace))
        if not ready:
            self._loop.advance(timeout)
        return ready

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[FileObject, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """A selector event loop whose :meth:`time` is virtual (see the module's docs)."""

    def __init__(self, io_grace: float = 0.0) -> None:
        self._virtual_now = 0.0
        super().__init__(_JumpingSelector(self, io_grace))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T], *, io_grace: float = 0.0) -> T:
    """``asyncio.run(main)`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(io_grace)) as runner:
        return runner.run(main)
