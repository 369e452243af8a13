"""Pacing: per-destination rate limits and service-ordered pauses, in plain asyncio.

Outside services limit how fast a bot may write: Slack about one message per second per channel,
Telegram about one per second per chat, twenty a minute per group and thirty a second per bot.
An action names the limits a call is subject to as a list of :class:`Pace` (most specific
first: the destination, then anything shared, such as the bot); the dispatcher wraps each call
in :meth:`Pacer.acquire`::

    async with pacer.acquire(action.pacing(params)):
        result = await action.execute(params, context)

* A call counts from when it *ends* (its answer came back): the service sees a request arrive
  after the previous one did, so a limit measured at the service holds whatever the latency.
* A call waits only for the keys it names: waiting for one chat never blocks another.
* Calls to one destination (the first pace) go one at a time, in the order they asked.
* When the call raises an :class:`~rulekit.errors.ActionError` with ``retry_after``, the keys it
  concerns are paused for that long: only the destination, or every key whose pace has the
  error's ``scope`` (``"service"``: the whole bot) — so nothing is sent into a window the
  service asked us to keep quiet.

A channel's service is paced by the account behind it (Chatra's limits are per account), under
one key, :func:`service_key` of :attr:`Provider.service_account
<rulekit.channels.base.Provider.service_account>`: the dispatcher's calls that go through a
channel's provider (a reply, a change of client data) name it, and a provider's own fetching of
updates waits for its pauses and reports the 429s it meets under it
(:meth:`rulekit.channels.base.Inbound.pause_service`), so a Retry-After met by either side, on
any channel with the same credentials, holds back all of them.

A :class:`Pacer` holds no global state: the daemon makes one and shares it between dispatchers
and fetchers. Idle keys are forgotten, so memory follows the number of busy destinations.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rulekit.errors import ActionError


def service_key(account: str) -> str:
    """The key every call to a service with the credentials of ``account`` (a provider's
    :attr:`~rulekit.channels.base.Provider.service_account`) is paused under (a service-wide
    Retry-After, with the pace's ``scope`` ``"service"``): the dispatcher's calls through the
    providers of every channel of that account and their own fetching alike. It only pauses:
    a provider's ``service`` reply limit is kept per channel, under :func:`reply_key`."""
    return f"service:{account}"


def reply_key(channel: str) -> str:
    """The key of ``channel``'s own service-wide reply rate limit (a provider's
    :attr:`~rulekit.channels.base.Provider.reply_limits` ``service``), per channel."""
    return f"replies:{channel}"


@dataclass(frozen=True)
class Limit:
    """At most ``count`` calls in any ``period`` seconds (a sliding window)."""

    count: int
    period: float

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0:
            raise ValueError("a limit needs count >= 1 and period > 0")


@dataclass(frozen=True)
class Pace:
    """One key a call is paced by: its name, its rate limit (None: only pauses apply) and its
    scope — which :attr:`ActionError.scope <rulekit.errors.ActionError.scope>` pauses it."""

    key: str
    limit: Limit | None = None
    scope: str = "destination"


class _KeyState:
    # (a plain class with slots: one is made for every new destination, a call each)
    __slots__ = ("lock", "paused_until", "sent", "users")

    def __init__(self) -> None:
        # the last calls, oldest first: [start], then [end] once the call is over
        self.sent: deque[list[float]] = deque()
        self.paused_until = 0.0
        self.lock = asyncio.Lock()
        self.users = 0

    def delay(self, now: float, limit: Limit | None) -> float:
        wait = self.paused_until - now
        if limit is not None:
            sent = self.sent
            while len(sent) > limit.count:
                sent.popleft()
            if len(sent) >= limit.count:
                first = sent[0][0] if len(sent) == 1 else min(mark[0] for mark in sent)
                wait = max(wait, first + limit.period - now)
        return wait

    def idle(self, now: float, period: float) -> bool:
        if self.users or self.paused_until > now:
            return False
        return all(mark[0] + period <= now for mark in self.sent)


class Slot:
    """The right to make one call, handed out by :meth:`Pacer.acquire`."""

    def __init__(self, pacer: Pacer, paces: Sequence[Pace]) -> None:
        self._pacer = pacer
        self.paces = tuple(paces)

    def pause(self, seconds: float, scope: str = "destination") -> None:
        """Pause the keys this call concerns: the destination, or those of ``scope``."""
        keys = [p.key for p in self.paces if p.scope == scope] if scope != "destination" else []
        if not keys and self.paces:
            keys = [self.paces[0].key]
        for key in keys:
            self._pacer.pause(key, seconds)

    def report(self, error: BaseException) -> None:
        """Apply what a failure says: an :class:`ActionError` with ``retry_after`` pauses."""
        if isinstance(error, ActionError) and error.retry_after and error.retry_after > 0:
            self.pause(error.retry_after, error.scope)


class Pacer:
    """Rate limits and pauses per key, shared by every call made through it."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}
        self._periods: dict[str, float] = {}
        self._sweep_at = 1024

    def now(self) -> float:
        """The pacer's clock: the event loop's (monotonic) time unless one was given."""
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    def _state(self, key: str) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        return state

    def pause(self, key: str, seconds: float) -> None:
        """Send nothing to ``key`` for ``seconds`` from now (an existing longer pause stays)."""
        state = self._state(key)
        state.paused_until = max(state.paused_until, self.now() + seconds)

    def paused_for(self, key: str) -> float:
        """Seconds left in ``key``'s pause (0 when it is not paused)."""
        state = self._keys.get(key)
        return max(0.0, state.paused_until - self.now()) if state else 0.0

    def delay(self, paces: Sequence[Pace]) -> float:
        """How long a call with ``paces`` would wait now (0 when it could go at once)."""
        now = self.now()
        waits = [self._keys[p.key].delay(now, p.limit) for p in paces if p.key in self._keys]
        return max([0.0, *waits])

    def ready(self, paces: Sequence[Pace]) -> bool:
        """Whether a call with ``paces`` would go at once: its destination is not in use and
        no limit or pause of its keys makes it wait."""
        first = self._keys.get(paces[0].key) if paces else None
        if first is not None and first.lock.locked():
            return False
        return self.delay(paces) <= 0

    def idle(self, key: str, now: float) -> bool:
        """Whether ``key`` is idle at ``now`` (the pacer's clock): nobody uses or waits for
        it, it is not paused, and its limit's period has passed since its last call. It only
        reads what the event loop writes, so it may be asked from another thread, as a hint
        that :meth:`ready` confirms before the call."""
        state = self._keys.get(key)
        if state is None:
            return True
        if state.users or state.paused_until > now:
            return False
        period = self._periods.get(key, 0.0)
        return all(mark[0] + period <= now for mark in tuple(state.sent))

    def acquire(self, paces: Sequence[Pace]) -> _Acquisition:
        """Wait until a call subject to ``paces`` may go, and count it (``async with``).

        The first pace is the destination: its calls are made one at a time, in order. An
        :class:`ActionError` raised inside the block with ``retry_after`` pauses the keys it
        concerns (see :meth:`Slot.report`) before the next call may go.
        """
        return _Acquisition(self, paces)

    def _forget_idle(self, paces: Sequence[Pace], now: float) -> None:
        keys: list[str] = [p.key for p in paces]
        if len(self._keys) > self._sweep_at:  # now and then, also keys nobody asked for again
            keys = list(self._keys)
            self._sweep_at = max(1024, 2 * len(self._keys))
        for key in keys:
            state = self._keys.get(key)
            if state is not None and state.idle(now, self._periods.get(key, 0.0)):
                del self._keys[key]
                self._periods.pop(key, None)

    def __len__(self) -> int:
        """How many keys the pacer currently remembers (busy, paused or recently used)."""
        return len(self._keys)


class _Acquisition:
    """One :meth:`Pacer.acquire`: an async context manager written out (not a generator), for
    it wraps every call the dispatcher makes."""

    __slots__ = ("_clock", "_mark", "_pacer", "_states", "paces", "slot")

    def __init__(self, pacer: Pacer, paces: Sequence[Pace]) -> None:
        self._pacer = pacer
        self.paces = paces
        self.slot = Slot(pacer, paces)
        self._states: list[_KeyState] = []
        self._mark: list[float] = [0.0]
        self._clock: Callable[[], float] = pacer.now

    async def __aenter__(self) -> Slot:
        pacer, paces = self._pacer, self.paces
        self._clock = pacer._clock or asyncio.get_running_loop().time  # (the loop's, once)
        if not paces:
            return self.slot
        keys, periods = pacer._keys, pacer._periods
        states = self._states = []
        for pace in paces:
            state = keys.get(pace.key)
            if state is None:
                state = keys[pace.key] = _KeyState()
            states.append(state)
            state.users += 1
            if pace.limit is not None and periods.get(pace.key, 0.0) < pace.limit.period:
                periods[pace.key] = pace.limit.period
        lock = states[0].lock
        try:
            await lock.acquire()
        except BaseException:
            self._leave()
            raise
        try:
            while True:
                now = self._clock()
                wait = 0.0
                for pace, state in zip(paces, states, strict=True):
                    wait = max(wait, state.delay(now, pace.limit))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
        except BaseException:
            lock.release()
            self._leave()
            raise
        mark = self._mark
        mark[0] = now
        for pace, state in zip(paces, states, strict=True):
            if pace.limit is not None:
                state.sent.append(mark)
        return self.slot

    async def __aexit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        if not self.paces:
            return
        try:
            if error is not None:
                self.slot.report(error)
        finally:
            now = self._clock()
            self._mark[0] = max(self._mark[0], now)
            self._states[0].lock.release()
            self._leave(now)

    def _leave(self, now: float | None = None) -> None:
        for state in self._states:
            state.users -= 1
        self._pacer._forget_idle(self.paces, self._clock() if now is None else now)
