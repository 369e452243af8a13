"""Host name lookups that one name whose DNS never answers cannot hold up for all the others.

asyncio looks a name up (``loop.getaddrinfo``, which aiohttp, httpx through anyio and
aiosmtplib all call) in a thread of the loop's default executor: a few threads (the CPU count
plus four, so six on two cores). A lookup that hangs (a webhook target or a mail server whose
DNS server does not answer) holds its thread until the system's resolver gives up, long after
the action's timeout ended the call; the retry looks it up again in another thread. A few calls
to one such name took every thread, and then every other lookup waited behind them: no Slack,
Telegram or Chatra call could start, and neither could the state-changing actions (``tag``,
``set_state``, ...), which run in that executor too.

The daemon's loop looks names up through :class:`Lookups` (:meth:`Lookups.install`): in
threads of its own, never the default executor's, and one lookup at a time per name: a call
that asks while the same lookup is under way waits for its answer (and may give up waiting,
as its timeout says) instead of taking another thread. A name that never answers holds one
thread, whatever the number of calls to it.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

THREADS = 32
"""Lookups of different names under way at once; a lookup of yet another name waits for one."""

Key = tuple[Any, Any, int, int, int, int]


class Lookups:
    """``getaddrinfo`` for one event loop: shared per name, in a thread pool of its own."""

    def __init__(self, threads: int = THREADS) -> None:
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="rulekit-lookup")
        self._under_way: dict[Key, asyncio.Future[Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop``'s name lookups this object's (until :meth:`uninstall`)."""
        self._loop = loop
        loop.getaddrinfo = self.getaddrinfo  # type: ignore[method-assign]

    def uninstall(self) -> None:
        """Give the loop its own lookups back, and end the threads once their lookups end."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.__dict__.get("getaddrinfo") == self.getaddrinfo:
            del loop.getaddrinfo
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def getaddrinfo(
        self,
        host: Any,
        port: Any,
        *,
        family: int = 0,
        type: int = 0,  # (the name asyncio's own getaddrinfo gives it)
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        """As :meth:`asyncio.loop.getaddrinfo`; a lookup already under way is waited for. An
        address is answered at once, without a thread: nothing to look up (uvloop's
        ``sock_connect`` asks for the address it connects to, which must not wait for a thread
        while every one is held by names that never answer)."""
        if _is_address(host):
            numeric = flags | socket.AI_NUMERICHOST
            return socket.getaddrinfo(host, port, family, type, proto, numeric)
        key: Key = (host, port, family, type, proto, flags)
        lookup = self._under_way.get(key)
        if lookup is None:
            loop = asyncio.get_running_loop()
            call = functools.partial(socket.getaddrinfo, host, port, family, type, proto, flags)
            lookup = loop.run_in_executor(self._executor, call)
            self._under_way[key] = lookup
            lookup.add_done_callback(functools.partial(self._done, key))
        # shielded: a caller that gives up (its timeout) leaves the lookup to the others
        return await asyncio.shield(lookup)

    def _done(self, key: Key, lookup: asyncio.Future[Any]) -> None:
        if self._under_way.get(key) is lookup:
            del self._under_way[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: nobody may be waiting for it any more


def _is_address(host: Any) -> bool:
    """Whether ``host`` is an IPv4 or IPv6 address (an IPv6 one may name its zone: ``%eth0``)."""
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    return True
