"""Retention: deleting what the config's ``retention:`` no longer keeps.

The daemon calls :func:`purge` hourly; ``rulekit db purge`` calls it once. Audit records (with
their jobs and attempts) and inbox items go after ``retention.events``; raw payloads (inbox
bodies) are emptied after ``retention.payloads``. Pending work is never purged.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from rulekit.config import RetentionSettings
from rulekit.store.base import JournaledStore
from rulekit.store.erasure import PURGE_KINDS
from rulekit.store.records import utc

PURGE_LABELS = {
    "events": "audit records deleted",
    "jobs": "action jobs deleted",
    "attempts": "action attempts deleted",
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


BATCH = 1000
"""Events (and inbox items, and payloads) deleted per transaction: the store's write lock is
held briefly, so webhooks are taken in between, however much there is to purge."""


def purge(
    store: JournaledStore,
    settings: RetentionSettings,
    now: datetime | None = None,
    *,
    batch: int = BATCH,
) -> dict[str, int]:
    """Delete what is older than ``settings`` allow at ``now``, in transactions of at most
    ``batch`` events each; return how much by kind (:data:`rulekit.store.erasure.PURGE_KINDS`,
    in that order)."""
    now = utc(now)
    total = dict.fromkeys(PURGE_KINDS, 0)
    while True:
        with store.transaction() as state:
            counts = state.purge(
                events_before=now - settings.events,
                payloads_before=now - settings.payloads,
                batch=batch,
            )
        for kind in PURGE_KINDS:
            total[kind] += counts.get(kind, 0)
        if all(counts.get(kind, 0) < batch for kind in ("events", "inbox", "payloads")):
            return total
