"""Retention: deleting what the config's ``retention:`` no longer keeps.

The daemon calls :func:`purge` hourly; ``rulekit db purge`` calls it once. Audit records (with
their jobs and attempts) and inbox items go after ``retention.events``; raw payloads (inbox
bodies) are emptied after ``retention.payloads``; timers that ended (fired, cancelled, dropped)
go ``retention.events`` after they ended. Pending work is never purged. Console sessions that
ran out, and sign-in failures an hour old, go too (not counted: they hold nothing personal and
are no history).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from rulekit.config import RetentionSettings
from rulekit.store.base import JournaledStore
from rulekit.store.erasure import PURGE_KINDS
from rulekit.store.records import utc

PURGE_LABELS = {
    "events": "audit records deleted",
    "jobs": "action jobs deleted",
    "attempts": "action attempts deleted",
    "timers": "finished timers deleted",
    "inbox": "inbox items deleted",
    "payloads": "raw payloads emptied",
}
"""How ``rulekit db purge`` names each kind."""


def describe(duration: timedelta) -> str:
    """A retention duration as written in the config: ``90d``, ``12h``, ``30m``."""
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


BATCH = 200
"""Events (and inbox items, and payloads) deleted per transaction: the store's write lock is
held briefly (~20 ms on SQLite), so webhooks are taken in between, however much there is to
purge."""


def purge(
    store: JournaledStore,
    settings: RetentionSettings,
    now: datetime | None = None,
    *,
    batch: int = BATCH,
    pause: Callable[[float], object] = time.sleep,
) -> dict[str, int]:
    """Delete what is older than ``settings`` allow at ``now``, in transactions of at most
    ``batch`` events each; return how much by kind (:data:`rulekit.store.erasure.PURGE_KINDS`,
    in that order).

    Between its transactions the purge waits (``pause``) as long as the last one took, at
    most a second: the store's write lock is not handed over in order, and a purge that took
    it again at once kept webhooks waiting about a batch each."""
    now = utc(now)
    total = dict.fromkeys(PURGE_KINDS, 0)
    while True:
        began = time.monotonic()
        with store.transaction() as state:
            counts = state.purge(
                events_before=now - settings.events,
                payloads_before=now - settings.payloads,
                batch=batch,
            )
            # the console's sessions that ran out and sign-in failures (the store's clock)
            ended = state.purge_console(batch=batch)
        for kind in PURGE_KINDS:
            total[kind] += counts.get(kind, 0)
        kinds = ("events", "timers", "inbox", "payloads")
        if ended < batch and all(counts.get(kind, 0) < batch for kind in kinds):
            return total
        pause(min(time.monotonic() - began, 1.0))
