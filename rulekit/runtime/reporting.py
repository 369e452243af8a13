"""How a processed event is reported: counted in the metrics, published to the live feed and
logged (one line, without the client's data). Every path that records events reports them so:
the processor, the dispatcher (events an action emitted), the console (an agent's reply or
change)."""

from __future__ import annotations

import logging

from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.logs import log, log_id
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.planning import Processed

logger = logging.getLogger("rulekit.processor")
"""The lines are the processing's: logged as ``rulekit.processor`` wherever an event is recorded."""


def report(result: Processed, metrics: Metrics, feed: LiveFeed) -> None:
    """Count and publish one processed event."""
    if result.recorded:
        metrics.event_processed(result.event.channel, result.event.event)
        for rule in result.matched:
            metrics.rule_matched.labels(rule).inc()
    feed.publish(result.message())
    log(
        logger,
        logging.INFO,
        f"event {log_id(result.event.id)}: {result.event.event}",  # (the id holds a chat's)
        channel=result.event.channel,
        inbox_id=result.inbox_id,
        matched=len(result.matched),
        jobs=len(result.jobs),
        duplicate=not result.recorded,
    )
