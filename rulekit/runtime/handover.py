"""What the processor hands the dispatcher in memory: the events it recorded with jobs, and
when their webhooks arrived.

The dispatcher claims the jobs from the store; the event each job belongs to is taken from here
when the processor recorded it a moment ago (:meth:`RecordedEvents.take`), so that the stored
copy need not be read and validated again; one no longer kept is read from the store. Kept
events are bounded in number and in the bytes of the bodies they came from; arrival times, for
the latency metrics, in number.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime

from rulekit.event import Event

ARRIVALS_KEPT = 10_000
RECORDED_KEPT = 2_000
"""Recorded events kept for the dispatcher; one it claims later is read from the store."""
RECORDED_BYTES = 16 * 1024 * 1024
"""Bytes of webhook bodies the events kept for the dispatcher may come from, together (an
event's texts are at most its body's; a body's events share it): while a destination holds
their jobs back, 2,000 events of 4 MB messages would otherwise be kept, 8 GB."""


class RecordedEvents:
    """Recently recorded events with jobs, as recorded (without their raw payload), until the
    dispatcher takes them, each with its share of its body's bytes; and when recently
    processed events' webhooks arrived."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, tuple[Event, int]] = OrderedDict()
        self._bytes = 0
        self._arrivals: OrderedDict[str, datetime] = OrderedDict()

    def keep(self, events: list[Event], body_bytes: int) -> list[str]:
        """Keep ``events`` (one body's with jobs, of ``body_bytes``) for the dispatcher and
        return their ids. Called inside the transaction that records them, before it commits:
        the dispatcher cannot claim their jobs before the commit, and may claim them at once
        after it. The oldest are dropped beyond :data:`RECORDED_KEPT` events or
        :data:`RECORDED_BYTES` (the dispatcher reads those from the store)."""
        ids = []
        share = body_bytes // max(len(events), 1) + 1
        kept = self._kept
        for event in events:
            self.take(event.id)  # (kept again: counted once)
            kept[event.id] = (event.replaced(raw=None), share)
            self._bytes += share
            ids.append(event.id)
            while len(kept) > RECORDED_KEPT or self._bytes > RECORDED_BYTES:
                _, (_, dropped) = kept.popitem(last=False)
                self._bytes -= dropped
        return ids

    def take(self, event_id: str) -> Event | None:
        """A recently recorded event with jobs, as the store has it (``raw`` left out), handed
        over once: the dispatcher then need not validate the stored copy again."""
        kept = self._kept.pop(event_id, None)
        if kept is None:
            return None
        self._bytes -= kept[1]
        return kept[0]

    def take_back(self, ids: list[str]) -> None:
        """Forget events :meth:`keep` kept for a transaction that did not commit."""
        for event_id in ids:
            self.take(event_id)

    def arrived(self, event_ids: list[str], at: datetime) -> None:
        """The webhook of ``event_ids`` arrived ``at``."""
        arrivals = self._arrivals
        for event_id in event_ids:
            arrivals[event_id] = at
            if len(arrivals) > ARRIVALS_KEPT:
                arrivals.popitem(last=False)

    def arrival(self, event_id: str) -> datetime | None:
        """When the webhook of a recently processed event arrived (for latency metrics)."""
        return self._arrivals.get(event_id)
