"""The evaluation worker: a separate process that evaluates events against the rules.

Rules are admin-written code of a kind (conditions and templates), and the values they read come
from outside. However well the sandbox counts work, a thread cannot stop a runaway evaluation,
and one holding the GIL stalls everything else the daemon does. So the daemon evaluates in a
worker process it can limit and, if need be, kill (:mod:`rulekit.runtime.evaluator`):

* **CPU budget** per event (``processing.event_cpu``): a profiling timer interrupts the
  evaluation, which fails with :class:`OverBudget`; and for the events of one request (one
  webhook's, or those one action emitted) together (``processing.webhook_cpu``), so that a body
  of 1,000 events holds the worker, and every other webhook waiting for it, for that long at
  most rather than 1,000 times an event's budget;
* **memory**: the worker's address space is capped at what it needs after loading plus
  ``processing.worker_memory``; running out fails the rule (or the event) that asked for it;
* **wall budget** per event (``processing.event_wall``), and for one request's events together
  (``processing.webhook_wall``), enforced by the daemon: a worker that does not answer in time
  (stuck in C code, asleep) is killed and replaced.

The worker loads the rules and config itself, from the bytes the daemon read when it loaded them
(:mod:`rulekit.sources`), so it evaluates exactly the rules the daemon validated.
It holds no store connection: the daemon sends the events with the conversation's cooldown
marks and receives the plans as plain data (:class:`Evaluation`), then commits them.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rulekit.event import Agent, Client, Conversation, Event, Message
from rulekit.models import whole_builder
from rulekit.sources import Files
from rulekit.store.records import JobSpec
from rulekit.team import TeamFacts

if TYPE_CHECKING:
    from rulekit.snapshot import Snapshot


class OverBudget(BaseException):
    """An evaluation ran out of its CPU budget.

    A ``BaseException``: the engine turns an ``Exception`` of a condition or template into that
    rule's failure and goes on, but an evaluation over its budget must stop."""


@dataclass
class Limits:
    """The worker's budgets (seconds, bytes); see ``processing`` in the config."""

    event_cpu: float = 2.0
    event_wall: float = 10.0
    webhook_cpu: float = 10.0
    """CPU seconds the events of one request may take together."""
    webhook_wall: float = 30.0
    """Seconds the daemon waits for the answer to one request, whatever its events' count."""
    worker_memory: int = 1024 * 1024 * 1024

    def request_wall(self, events: int) -> float:
        """Seconds the daemon waits for the answer to a request of ``events`` events."""
        return min(self.event_wall * max(1, events), self.webhook_wall)


@dataclass
class Evaluation:
    """What the engine decided for one event, as data the daemon records."""

    event_id: str
    jobs: list[JobSpec]
    trace: Mapping[str, Any]
    """The trace to record (:func:`rulekit.engine.trace.encoded_trace`: its text as the store
    writes it, which is what travels from the worker)."""
    matched: list[str]
    errors: list[str]
    cooldowns: list[tuple[str, str, datetime]]
    """The plan's new cooldown marks: ``(rule, conversation id, until)``."""
    cooldowns_read: list[tuple[str, str, datetime | None]] = field(default_factory=list)
    """The marks the evaluation depended on, as it saw them: checked again at commit."""
    timers: list[tuple[str, str, datetime, bool]] = field(default_factory=list)
    """Timers the plan starts: ``(rule, conversation id, due, restart)``."""
    cancels: list[tuple[str, str]] = field(default_factory=list)
    """Pending timers the event cancels: ``(rule, conversation id)``."""
    firing: dict[str, Any] | None = None
    """For a due timer's request: its outcome (:meth:`rulekit.engine.timers.Firing.as_dict`)."""
    team: dict[str, Any] | None = None
    """What the rules read of ``team`` (:attr:`rulekit.engine.plan.Plan.team`), when they did:
    the trace holds it too, but the live feed shows it without decoding the trace."""


@dataclass
class Firing:
    """A due timer to evaluate: its rule, when it was due and the time it fires at."""

    rule: str
    due: datetime
    now: datetime


@dataclass
class Request:
    """Evaluate ``events`` in order (one inbox item's, or those an action emitted).

    ``cooldowns`` holds each conversation's marks as the store had them; ``skip`` names events
    recorded before (redeliveries), which are not evaluated."""

    events: list[Event]
    cooldowns: dict[str, dict[str, datetime]]
    skip: frozenset[str] = frozenset()
    firing: Firing | None = None
    """Set for a due timer: the one event is its trigger at fire time
    (:meth:`rulekit.engine.engine.Engine.fire`)."""
    team: TeamFacts | None = None
    """The team's presence and open counts, read with the marks when the rules read
    ``team`` (:mod:`rulekit.team`)."""

    # Sent to the worker with its events as plain data: pickling a model pickles each of its
    # nested models field by field (a class reference and a state dict each), and pydantic's
    # JSON costs the worker a whole validation per event; the daemon pays one or the other for
    # every event it evaluates. The events are the daemon's own, validated when made: the
    # worker rebuilds them as they were, without validating them again.
    # (its fields as a tuple: a dataclass's state dict costs more to pickle than its values)
    def __reduce__(self) -> tuple[Any, ...]:
        events = [_portable(event) for event in self.events]
        return _received, (events, self.cooldowns, self.skip, self.firing, self.team)


def _received(
    events: list[Event | _Sent],
    cooldowns: dict[str, dict[str, datetime]],
    skip: frozenset[str],
    firing: Firing | None,
    team: TeamFacts | None,
) -> Request:
    """A :class:`Request` as the worker unpickles it."""
    return Request([_unportable(event) for event in events], cooldowns, skip, firing, team)


_NOT_SENT = {"raw"}
"""Left out of the events sent: rules cannot read the provider's raw payload (a load error),
nor are actions handed it, and it is often the larger part of an event."""

_PARTS: tuple[tuple[str, type[BaseModel]], ...] = (
    ("conversation", Conversation),
    ("client", Client),
    ("message", Message),
    ("agent", Agent),
)
"""The event's sub-objects, sent as their fields (each of exactly its class)."""

_Sent = tuple[dict[str, Any], frozenset[str]]


def _portable(event: Event) -> Event | _Sent:
    """An event as plain data: its fields (``raw`` left out) with the names of those that were
    set, each sub-object in its place as its own fields and set names; or the event itself
    when it carries private state (a timer's trigger) or is not of the usual classes."""
    private = event.__pydantic_private__
    if type(event) is not Event or (private and any(v is not None for v in private.values())):
        return event
    fields = dict(event.__dict__)  # (in place, so that the fields keep their order)
    for name, cls in _PARTS:
        part = fields[name]
        if type(part) is not cls or part.__pydantic_private__ or part.__pydantic_extra__:
            return event
        fields[name] = (part.__dict__, part.__pydantic_fields_set__)
    fields["raw"] = None
    return fields, frozenset(event.__pydantic_fields_set__.difference(_NOT_SENT))


def _unportable(sent: Event | _Sent) -> Event:
    if isinstance(sent, Event):
        return sent
    fields, fields_set = sent
    for (name, _), build in zip(_PARTS, _BUILD_PARTS, strict=True):
        fields[name] = build(*fields[name])
    return _build_event(fields, fields_set)


_BUILD_PARTS = tuple(whole_builder(cls, derives=False) for _, cls in _PARTS)
_build_event = whole_builder(Event, derives=False)


@dataclass
class Refusal:
    """The request failed as a whole: the item is set aside with ``reason``."""

    reason: str
    template: str | None = None
    """``reason`` with ``{ids}`` where it names events (:meth:`naming`)."""
    ids: tuple[str, ...] = ()
    """The events it names."""

    @classmethod
    def naming(cls, ids: list[str], reason: str) -> Refusal:
        """A refusal whose ``reason`` holds ``{ids}`` where it names the events."""
        return cls(reason.format(ids=", ".join(ids)), reason, tuple(ids))

    @property
    def said(self) -> str:
        """What the log says of the refusal: the stored reason names the events whole, the
        log by :func:`~rulekit.runtime.logs.log_id` (an id may hold a client's chat id),
        hashed where it is logged, with that process's key (a worker has none)."""
        if self.template is None:
            return self.reason
        from rulekit.runtime.logs import log_id

        return self.template.format(ids=", ".join(log_id(one) for one in self.ids))


@dataclass
class Ready:
    """The worker loaded the rules (``version``), or could not (``error``)."""

    version: str | None
    error: str | None = None


class CooldownView:
    """The engine's view of cooldown marks inside the worker: the marks the daemon sent, and
    those of earlier events of the same request; every read is kept for the check at commit."""

    def __init__(self, marks: dict[str, dict[str, datetime]]) -> None:
        self.marks = {conversation: dict(rules) for conversation, rules in marks.items()}
        self.reads: list[tuple[str, str, datetime | None]] = []

    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        until = self.marks.get(conversation_id, {}).get(rule)
        self.reads.append((rule, conversation_id, until))
        return until

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.marks.setdefault(conversation_id, {})[rule] = until


def _over_request(event: Event, limits: Limits) -> Refusal:
    return Refusal.naming(
        [event.id],
        f"evaluating event {{ids}} took more than its CPU budget ({limits.webhook_cpu:g} s "
        "for the events of its webhook together; processing.webhook_cpu)",
    )


def _over_budget(signum: int, frame: FrameType | None) -> None:
    raise OverBudget


def serve(
    connection: Connection,
    config_path: str | None,
    rules_path: str | None,
    limits: Limits,
    files: Files,
    environment: dict[str, str],
    interpolation: dict[str, str],
    cwd: str,
    path: list[str],
    log_lines: Connection,
) -> None:
    """The worker process's main loop: load, say :class:`Ready`, answer requests until the
    daemon closes the connection.

    ``environment`` is the worker's whole environment and ``interpolation`` the variables the
    config names, neither holding a secret (:mod:`rulekit.runtime.confined`). What the worker
    logs goes to the daemon over ``log_lines``, which redacts the secrets the worker does not
    know (:func:`rulekit.runtime.logs.relay_lines`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when its workers stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    sys.path[:] = path
    from rulekit.config import LoggingSettings
    from rulekit.runtime.logs import LineSender, configure_logging, secret_values
    from rulekit.snapshot import freeze_heap, load_snapshot

    # what a plugin or a filter logs here passes the daemon's filters too (without a handler,
    # Python would print it raw): content hidden while loading, then as the config says
    stream = LineSender(log_lines)
    configure_logging(LoggingSettings(), stream)
    try:
        snapshot = load_snapshot(config_path, rules_path, files=files, environ=interpolation)
    except Exception as exc:
        connection.send(Ready(None, f"{type(exc).__name__}: {exc}"))
        return
    secrets = secret_values(snapshot.config)
    configure_logging(snapshot.config.raw.logging, stream, secrets=lambda: secrets)
    files.clear()  # this copy of the files' bytes served loading only (the daemon keeps its own)
    freeze_heap()  # the rules stay for the worker's life: never scanned again
    _cap_memory(limits.worker_memory)
    signal.signal(signal.SIGPROF, _over_budget)
    connection.send(Ready(snapshot.version))
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return
        if isinstance(request, list):  # several requests in one exchange, answered in order
            connection.send([evaluate(snapshot, one, limits) for one in request])
        else:
            connection.send(evaluate(snapshot, request, limits))


def evaluate(snapshot: Snapshot, request: Request, limits: Limits) -> list[Evaluation] | Refusal:
    """Evaluate a request's events in order, each within the CPU budget."""
    from rulekit.engine.trace import encoded_trace

    engine = snapshot.engine
    view = CooldownView(request.cooldowns)
    out = []
    started = time.process_time()
    for event in request.events:
        if event.id in request.skip:
            continue
        view.reads = []
        # each event within its own budget and what is left of its request's
        budget = min(limits.event_cpu, limits.webhook_cpu - (time.process_time() - started))
        if budget <= 0:
            return _over_request(event, limits)
        try:
            signal.setitimer(signal.ITIMER_PROF, budget)
            try:
                firing = request.firing
                if firing is not None:
                    plan = engine.fire(
                        firing.rule, event, firing.due, firing.now, explain=True, team=request.team
                    )
                else:
                    plan = engine.evaluate(event, view, explain=True, team=request.team)
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            jobs = [
                JobSpec(
                    rule=planned.rule,
                    action=planned.action,
                    params=planned.json_params(),  # shared when constant: pickled to the daemon
                    destination=engine.actions[planned.action].destination(planned.model),
                    lane=engine.actions[planned.action].lane(planned.model, event),
                )
                for planned in plan.runnable
            ]
            trace = encoded_trace(plan, rules_version=snapshot.version)
        except OverBudget:
            if budget < limits.event_cpu:
                return _over_request(event, limits)
            return Refusal.naming(
                [event.id],
                "evaluating event {ids} took more than its CPU budget "
                f"({limits.event_cpu:g} s; processing.event_cpu)",
            )
        except MemoryError:
            return Refusal.naming(
                [event.id],
                "evaluating event {ids} needed more memory than the worker may use "
                "(processing.worker_memory)",
            )
        marks = [(mark.rule, mark.conversation_id, mark.until) for mark in plan.cooldowns]
        for rule, conversation_id, until in marks:
            view.set_cooldown(rule, conversation_id, until)
        out.append(
            Evaluation(
                event_id=event.id,
                jobs=jobs,
                trace=trace,
                matched=list(trace.matched),
                errors=list(plan.errors),
                cooldowns=marks,
                cooldowns_read=list(view.reads),
                timers=[(t.rule, t.conversation_id, t.due, t.restart) for t in plan.timers],
                cancels=[(c.rule, c.conversation_id) for c in plan.cancels],
                firing=plan.firing.as_dict() if plan.firing is not None else None,
                team=plan.team,
            )
        )
    return out


def _cap_memory(headroom: int) -> None:
    """Limit the address space to what the worker maps now plus ``headroom``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            sizes = [line.split()[1] for line in status if line.startswith("VmSize:")]
        current = int(sizes[0]) * 1024 if sizes else 0
    except (OSError, ValueError, IndexError):
        return
    limit = current + headroom
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
