"""Pacing agreed by every daemon through the store, and store calls retried through blips.

With several daemons on one PostgreSQL database (:attr:`Journal.shares_pacing`), a destination's
rate limit and a service's Retry-After must hold for all of them, so the dispatcher asks the
store before a paced call:

* :func:`shared_wait` reserves the next send slot of each rate-limited key and waits for it; the
  pauses of the keys a service-wide Retry-After concerns (:func:`paused_keys`) are read as the
  call starts, in the same statement that records its start;
* :func:`share_spacing`, once the call has been answered, moves each rate-limited key's next
  slot to at least its spacing after that answer: as with one daemon's pacer, a call counts
  from when it ends, so a slow call cannot bring the next one (another daemon's, once the lane
  is handed over) closer than the limit at the service;
* :func:`share_pause` pushes the paused keys' next slot for every daemon.

Each of these runs in a transaction **of its own** (``GroupCommit.run(..., alone=True)``): a
reservation locks its pacing row until commit, and two daemons' batches locking the rows of
several keys in different orders would deadlock each other.

:func:`retry_store` runs store work again, with a backoff, while the store is unavailable: a
database blip delays a call, it never counts as an attempt of the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rulekit.actions.pacing import Pace
from rulekit.errors import StoreUnavailable
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.logs import log
from rulekit.store.base import JournaledState

logger = logging.getLogger("rulekit.dispatcher")

T = TypeVar("T")

STORE_BACKOFF_FIRST = 0.5
STORE_BACKOFF_MAX = 30.0


def store_backoff(previous: float) -> float:
    """The wait after a store error, given the previous one (0 for the first): 0.5 s, doubling
    up to 30 s. The dispatcher's claims and its calls' store work share it."""
    return min(max(previous * 2, STORE_BACKOFF_FIRST), STORE_BACKOFF_MAX)


async def retry_store(
    commit: GroupCommit,
    work: Callable[[JournaledState], T],
    what: str,
    *,
    stopping: Callable[[], bool],
    alone: bool = False,
) -> T:
    """``commit.run(work)``, run again after :func:`store_backoff` while the store is
    unavailable; :class:`StoreUnavailable` only once ``stopping()``."""
    delay = 0.0
    while True:
        try:
            return await commit.run(work, alone=alone)
        except StoreUnavailable as exc:
            if stopping():
                raise
            delay = store_backoff(delay)
            log(logger, logging.ERROR, f"cannot {what}", failure=exc, retry_in=delay)
            await asyncio.sleep(delay)


async def shared_wait(
    commit: GroupCommit, paces: Sequence[Pace], *, stopping: Callable[[], bool]
) -> None:
    """Wait for a reserved send slot of each rate-limited key of ``paces``, agreed by every
    daemon. (The pauses of its service-wide keys, :func:`paused_keys`, are read when the call
    starts: :meth:`~rulekit.store.base.JournaledState.begin_call`.)"""
    for pace in paces:
        if pace.limit is None:
            continue
        spacing = pace.limit.period / pace.limit.count

        def reserve(state: Any, key: str = pace.key, gap: float = spacing) -> float:
            return float(state.reserve_pace(key, gap))

        wait = await retry_store(
            commit, reserve, "reserve a send slot", stopping=stopping, alone=True
        )
        if wait > 0:
            await asyncio.sleep(wait)


def paused_keys(paces: Sequence[Pace]) -> list[str]:
    """The keys of ``paces`` a service-wide Retry-After pauses for every daemon: a call waits
    until none of them is paused."""
    return [p.key for p in paces if p.limit is None and p.scope == "service"]


async def share_spacing(
    commit: GroupCommit, paces: Sequence[Pace], *, stopping: Callable[[], bool]
) -> None:
    """After a call's answer: every rate-limited key's next slot is at least its spacing
    (``period / count``) from now, for every daemon."""
    spacings = {p.key: p.limit.period / p.limit.count for p in paces if p.limit is not None}
    if not spacings:
        return

    def space(state: Any) -> None:
        for key in sorted(spacings):
            state.pause_pace(key, spacings[key])

    await retry_store(commit, space, "space the next send", stopping=stopping, alone=True)


async def share_pause(
    commit: GroupCommit,
    paces: Sequence[Pace],
    scope: str,
    seconds: float,
    *,
    stopping: Callable[[], bool],
) -> None:
    """Tell every daemon about a Retry-After: pause the keys of ``scope`` (else the
    destination, the first pace) for ``seconds``."""
    keys = [p.key for p in paces if p.scope == scope] or [paces[0].key]

    def pause(state: Any) -> None:
        for key in sorted(keys):
            state.pause_pace(key, seconds)

    await retry_store(commit, pause, "share a Retry-After", stopping=stopping, alone=True)
