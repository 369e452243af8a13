"""One HTTP session per event loop, for providers that call their service's API.

A provider is called from the daemon's loop and, in tests and the CLI, from loops that
``asyncio.run`` starts and ends; an ``aiohttp`` session belongs to one loop. :class:`LoopSession`
keeps one session per running loop, makes a new one on another loop, and closes it on
:meth:`LoopSession.aclose` or, for callers that never call it, when the loop's tasks are
cancelled at its end.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp


class LoopSession:
    """An ``aiohttp`` session kept between calls on one event loop."""

    def __init__(self) -> None:
        self._kept: (
            tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession, asyncio.Task[None]] | None
        ) = None

    def get(self) -> aiohttp.ClientSession | None:
        """The running loop's session (made on first use); None outside a loop, where nothing
        can be sent."""
        import aiohttp

        from rulekit.actions.answers import bounded_response_class

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        kept = self._kept
        if kept is None or kept[0] is not loop or kept[1].closed:
            # no answer is read past MAX_ANSWER bytes (see rulekit.actions.answers)
            client = aiohttp.ClientSession(response_class=bounded_response_class())
            keeper = loop.create_task(_close_when_cancelled(client))
            self._kept = kept = (loop, client, keeper)
        return kept[1]

    async def aclose(self) -> None:
        """Close the HTTP connections kept between calls."""
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] is asyncio.get_running_loop():
            kept[2].cancel()
            await kept[1].close()


async def _close_when_cancelled(session: aiohttp.ClientSession) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()
