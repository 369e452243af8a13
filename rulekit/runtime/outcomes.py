"""What the dispatcher decides about one call, how it is recorded, and how it tells the log,
the metrics and the console."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio.to_thread

from rulekit.errors import ActionError, StoreUnavailable
from rulekit.event import MAX_OWN_EVENTS, Event, own_root
from rulekit.runtime import planning
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.evaluator import Evaluator, WorkerGone
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.logs import log, log_id
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.planning import Prepared, Processed, StateChanged
from rulekit.runtime.reporting import report
from rulekit.runtime.sharedpace import store_backoff
from rulekit.runtime.worker import Evaluation, Refusal
from rulekit.store.base import JournaledState
from rulekit.store.forms import PersonalValues, hidden_if_quoted, hidden_values
from rulekit.store.records import EventRecord, Job, Outcome

logger = logging.getLogger("rulekit.dispatcher")


@dataclass
class Decision:
    """The outcome of one call: what is recorded, and what it caused."""

    outcome: Outcome
    error: str | None = None
    result: Any = None
    retry_in: float | None = None
    failure: ActionError | None = None
    """The service's refusal, when it gave one (its Retry-After pauses the service)."""
    processed: list[Processed] = field(default_factory=list)
    """The events the call emitted, evaluated and recorded with the outcome."""
    event: Event | None = field(default=None, repr=False)
    """The event the call was made for (whose client a service's error may quote)."""
    sent: tuple[str, tuple[str, ...]] | None = None
    """The channel and the ids of the messages a reply created, marked seen with the outcome
    (:meth:`~rulekit.channels.base.Provider.sent_message_ids`): their echoes are rulekit's."""


def _quoted(job: Job, decision: Decision, event: Event | None) -> PersonalValues | None:
    """What a job's log line may quote of its event's client: with an error, what it hides;
    else what its destination and the reason its result gives hold, if anything."""
    if event is None:
        return None
    # (only the parts whose values are hidden: a whole event's dump is most of the cost, paid
    # for every job)
    data = event.model_dump(mode="json", include=_HIDDEN_PARTS)
    if decision.error:
        return hidden_values(data)
    reason = _reason(decision)
    return hidden_if_quoted([job.destination, *([reason] if reason else [])], data)


def _reason(decision: Decision) -> str | None:
    """Why a call that was done did less than asked, as its result says (``reason``: an
    ``assign`` that left a person's assignment as it was, or found nobody)."""
    result = decision.result
    if decision.outcome == "done" and type(result) is dict:
        reason = result.get("reason")
        return reason if isinstance(reason, str) and reason else None
    return None


def _reason_field(decision: Decision) -> dict[str, Any]:
    reason = _reason(decision)
    return {"reason": reason} if reason else {}


_HIDDEN_PARTS: Any = {"client": True, "message": {"text"}, "conversation": {"page"}}
"""The parts of an event :func:`~rulekit.store.forms.hidden_values` reads."""


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number ``attempt`` (1-based)."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt - 1, 62)))


_FLAT = frozenset({str, int, float, bool, type(None)})


def json_ready(value: Any) -> Any:
    """``value`` as the store keeps it (JSON data; anything else as its string)."""
    if type(value) is dict and all(
        type(key) is str and type(item) in _FLAT for key, item in value.items()
    ):
        return dict(value)  # what most actions return: the round trip would give the same
    return json.loads(json.dumps(value, default=str))


def kept_progress(progress: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The result a failed attempt records: what the job's calls got done so far
    (:attr:`~rulekit.errors.ActionError.progress`) under ``progress``; None when nothing."""
    return {"progress": json_ready(dict(progress))} if progress else None


def progress_of(job: Job) -> dict[str, Any] | None:
    """What ``job``'s earlier attempts got done (:func:`kept_progress`), for its next call."""
    result = job.result
    if type(result) is dict and type(result.get("progress")) is dict:
        return dict(result["progress"])
    return None


def announce(
    job: Job,
    record: EventRecord | None,
    decision: Decision,
    *,
    metrics: Metrics,
    feed: LiveFeed,
    arrived: datetime | None,
    ms: float,
    event: Event | None = None,
) -> None:
    """Log a recorded outcome, count it, and publish it (and what it caused) to the console;
    what the error quotes of ``event``'s client is hidden in the log unless content may be
    logged."""
    level = logging.INFO if decision.outcome == "done" else logging.WARNING
    if logger.isEnabledFor(level):  # (the usual case under load: nothing to build)
        log(
            logger,
            level,
            f"job {job.id} {job.action}: {decision.outcome}",
            job_id=job.id,
            event=log_id(job.event_id),
            rule=job.rule,
            destination=job.destination,
            attempt=job.attempts + 1,
            ms=ms,
            error=decision.error,
            **_reason_field(decision),
            # a service's error may quote what was sent, and the destination is made of the
            # params: the client's data, hidden unless content may be logged
            personal=_quoted(job, decision, event),
        )
    metrics.actions.labels(job.rule, job.action, decision.outcome).inc()
    message: dict[str, Any] | None = None
    if feed.listening:
        message = {
            "type": "action",
            "job_id": job.id,
            "event_id": job.event_id,
            "rule": job.rule,
            "action": job.action,
            "destination": job.destination,
            "attempt": job.attempts + 1,
            "outcome": decision.outcome,
            "error": decision.error,
        }
        feed.publish(message)
    if decision.outcome == "done":
        arrived = arrived or (record.processed_at if record else None)
        if arrived is not None:
            seconds = (datetime.now(UTC) - arrived).total_seconds()
            metrics.latency.labels(job.action).observe(max(0.0, seconds))
    elif decision.outcome == "retry":
        metrics.retries.labels(job.action).inc()
    else:
        metrics.dead_letters.labels(job.action).inc()
        if message is not None:
            feed.publish({**message, "type": "dead_letter"})
    for result in decision.processed:
        report(result, metrics, feed)


async def record_outcome(
    commit: GroupCommit,
    evaluator: Evaluator | None,
    job: Job,
    decision: Decision,
    emitted: list[Event],
    *,
    retry_at: datetime | None,
    hold: float | None,
    stopping: Callable[[], bool],
    owner: str | None = None,
    changes: planning.Changes | None = None,
) -> list[Processed] | None:
    """Record one attempt of ``job`` together with the events its action emitted (evaluated
    like inbox events: outside the transaction, in the evaluation worker); run again while the
    store is unavailable (:func:`~rulekit.runtime.sharedpace.store_backoff`) or the state the
    evaluation read changed.

    The call has been made: its outcome is recorded whatever happens to the events it caused,
    or it would be made again once the job's claim runs out. When they cannot be evaluated
    (the worker cannot start, a bug), they are recorded as refused, with the reason as their
    error and no actions, as an inbox item the worker refuses is set aside; when they cannot
    be recorded at all, the outcome is recorded alone. What still fails is logged and tried
    again after a pause (the lane then stalls, which ``/healthz`` tells), until the lane's
    task is cancelled; :class:`StoreUnavailable` is raised only once ``stopping()``.

    With ``owner``, the daemon that made the call: when another daemon has taken the job over
    and started its call since (this one was held up past its claim's lease), nothing is
    recorded (:meth:`~rulekit.store.outbox.Outbox.record_attempt`) and None is returned.

    With ``changes`` (those of the rules the daemon runs), the emitted events' plans' changes
    of the conversation are made as they are recorded (:mod:`rulekit.runtime.changes`)."""
    delay = 0.0
    alone = False
    while True:
        prepared: Prepared | None = None
        answer: list[Evaluation] | Refusal = []
        try:
            if emitted and evaluator is not None and not alone:
                prepared = await anyio.to_thread.run_sync(
                    partial(planning.prepare, team=evaluator.reads_team),
                    commit.store,
                    None,
                    emitted,
                )
                answer = await _evaluated(evaluator, job, prepared)

            def work(
                state: JournaledState,
                prepared: Prepared | None = prepared,
                answer: list[Evaluation] | Refusal = answer,
            ) -> list[Processed] | None:
                if not state.record_attempt(
                    job.id,
                    decision.outcome,
                    error=decision.error,
                    result=decision.result,
                    retry_at=retry_at,
                    hold=hold,
                    owner=owner,
                    seen=decision.sent,
                ):
                    return None  # taken over: the events it emitted are the taker's to record
                if prepared is None:
                    return []
                answer = _within_budget(state, prepared.events, answer)
                return planning.record(state, prepared, answer, inbox_id=None, changes=changes)

            return await commit.run(work)
        except StateChanged:
            continue
        except StoreUnavailable as exc:
            if stopping():
                raise
            delay = store_backoff(delay)
            log(logger, logging.ERROR, f"cannot record job {job.id}", failure=exc, retry_in=delay)
            await asyncio.sleep(delay)
        except Exception as exc:  # a bug: the outcome is recorded alone, or tried again
            if emitted and evaluator is not None and not alone:
                alone = True
                ids = ", ".join(log_id(event.id) for event in emitted)
                log(
                    logger,
                    logging.ERROR,
                    f"job {job.id}: the events its outcome caused cannot be recorded "
                    f"({type(exc).__name__}); its outcome is recorded without them: {ids}",
                    job_id=job.id,
                    exc_info=exc,
                )
                continue
            delay = store_backoff(delay)
            log(
                logger,
                logging.ERROR,
                f"cannot record job {job.id}: {type(exc).__name__}",
                job_id=job.id,
                retry_in=delay,
                exc_info=exc,
            )
            await asyncio.sleep(delay)


def _within_budget(
    state: JournaledState, emitted: list[Event], answer: list[Evaluation] | Refusal
) -> list[Evaluation] | Refusal:
    """``answer``, with the events past :data:`~rulekit.event.MAX_OWN_EVENTS` of their
    event from outside refused: recorded with the reason as their error, no rule reacting.
    Counted in the outcome's transaction, so every daemon counts each event once."""
    if not emitted or isinstance(answer, Refusal):
        return answer
    root = own_root(emitted[0].id)
    total = state.tally_own_events(root, len(emitted))
    if total is None or total <= MAX_OWN_EVENTS:
        return answer
    room = max(0, MAX_OWN_EVENTS - (total - len(emitted)))
    past = {event.id: event for event in emitted[room:]}
    over = Refusal.naming(
        [root],
        f"rulekit's own actions caused more than {MAX_OWN_EVENTS} events under event {{ids}}: "
        "no rule reacts to more",
    )
    return [planning.refused(past[e.event_id], over) if e.event_id in past else e for e in answer]


async def _evaluated(
    evaluator: Evaluator, job: Job, prepared: Prepared
) -> list[Evaluation] | Refusal:
    """The evaluation of the events ``job``'s action emitted; a refusal, logged, when the
    worker cannot evaluate them (it cannot start: :class:`WorkerGone`; a bug)."""
    try:
        return await anyio.to_thread.run_sync(evaluator.evaluate, prepared.request)
    except Exception as exc:
        log(
            logger,
            logging.ERROR,
            f"job {job.id}: the events its outcome caused are recorded unevaluated "
            f"({type(exc).__name__})",
            job_id=job.id,
            exc_info=exc,
        )
        # the reason is stored with the events and shown: it names the exception, and quotes
        # only rulekit's own words (a worker that cannot start), not a bug's message, which may
        # quote the events' data (its traceback went to the log, messages hidden as any)
        if isinstance(exc, WorkerGone):
            return Refusal(f"not evaluated: WorkerGone: {exc}")
        return Refusal(f"not evaluated: {type(exc).__name__}")
