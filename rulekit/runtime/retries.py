"""When a failed call is tried again, and when it is given up (dead-lettered).

**Retries.** A retryable failure (:class:`~rulekit.errors.RetryableActionError`, a timeout, an
unexpected exception) is retried after an exponential backoff with full jitter (``uniform(0,
min(backoff_max, backoff_base * 2**(attempt-1)))``), never sooner than the service's Retry-After
or flood-control wait; the :class:`~rulekit.actions.pacing.Pacer` also pauses the destination
(or the whole service, for a service-wide limit: a Chatra 429 pauses every reply through that
channel, and its client fetches) for that long, so nothing is sent into the window; a
service-wide 429 that gives no Retry-After pauses it for the retry's backoff. The lane
retries the job itself before its next job, keeping its claim meanwhile
(``record_attempt(hold=...)``), so no other daemon takes it. A job out of budget
(``max_attempts`` attempts, or older than ``max_age``) or failing permanently is
**dead-lettered**: kept with its error, counted, published to the console (``dead_letter``),
and retryable (``requeue_job``).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from rulekit.runtime.outcomes import Decision, backoff
from rulekit.store.records import EventRecord, Job


def retry_decision(
    job: Job,
    record: EventRecord,
    error: str,
    retry_after: float | None,
    *,
    settings: Any,
    rng: random.Random,
) -> Decision:
    """What follows a retryable failure of ``job``'s call: a retry after the backoff (never
    sooner than ``retry_after``), or ``dead`` when that would exceed ``settings.max_attempts``
    or ``settings.max_age`` (the dispatcher's settings)."""
    attempt = job.attempts + 1
    if attempt >= settings.max_attempts:
        return Decision("dead", f"{error} (gave up after {attempt} attempts)")
    delay = backoff(attempt, settings.backoff_base, settings.backoff_max, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    age = (datetime.now(UTC) - record.processed_at).total_seconds()
    if age + delay > settings.max_age.total_seconds():
        return Decision("dead", f"{error} (gave up: the job would be older than max_age)")
    return Decision("retry", error, retry_in=delay)
