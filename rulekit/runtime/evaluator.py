"""The daemon's side of the evaluation workers (:mod:`rulekit.runtime.worker`).

:class:`Evaluator` keeps ``processing.workers`` worker processes, started from a fork server
(a clean process, so no lock or thread of the daemon is inherited), and hands each request to
an idle one. It is called from worker threads (the processor's round, the dispatcher's record
of an attempt), never on the event loop, and waits at most the wall budget per event: a worker
that has not answered by then is killed, the request refused with the reason, and a fresh
worker started for the next one.

When the daemon's rules change (reload), each worker is replaced, before its next request, by
one that loads them from the bytes the daemon read (:mod:`rulekit.sources`): workers evaluate
exactly the rules the daemon validated, whatever the files hold by then.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, overload

from rulekit.runtime.confined import (
    interpolation_environment,
    worker_environment,
    worker_files,
)
from rulekit.runtime.forkserver import fork_server
from rulekit.runtime.logs import relay_lines
from rulekit.runtime.worker import Evaluation, Limits, Ready, Refusal, Request, serve
from rulekit.secrets import secret_values
from rulekit.snapshot import Snapshot

START_TIMEOUT = 300.0
"""Seconds a new worker may take to load the rules (10,000 rules load in a few)."""


class WorkerGone(Exception):
    """A worker died or could not start."""


class _Died:
    """A worker died while evaluating (killed by the system, crashed)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class _Worker:
    """One worker process and the daemon's end of its connection."""

    def __init__(
        self, process: BaseProcess, connection: Connection, version: str, live: set[BaseProcess]
    ) -> None:
        self.process = process
        self.connection = connection
        self.version = version
        self._live = live

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.connection.close()
        self._live.discard(self.process)


class Evaluator:
    """A pool of evaluation workers for one daemon."""

    def __init__(
        self,
        config_path: str | Path | None,
        rules_path: str | Path | None = None,
        *,
        limits: Limits | None = None,
        workers: int = 1,
    ) -> None:
        # absolute as named, never with symlinks resolved: the workers replay the files the
        # daemon read by the paths it read them at (:mod:`rulekit.sources`)
        self.config_path = os.path.abspath(config_path) if config_path else None
        self.rules_path = os.path.abspath(rules_path) if rules_path else None
        self.limits = limits or Limits()
        self.size = workers
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(workers):
            self._idle.put(None)  # started on first use
        self._wanted: Snapshot | None = None
        """The snapshot the daemon runs; workers are replaced until they load it."""
        self._closed = False
        self._lock = threading.Lock()
        self._live: set[BaseProcess] = set()
        self.restarts = 0

    # the daemon's side -----------------------------------------------------------------------
    def want(self, snapshot: Snapshot) -> None:
        """The daemon now runs ``snapshot``: workers load it before their next request."""
        self._wanted = snapshot

    @property
    def reads_team(self) -> bool:
        """Whether the rules the daemon runs read ``team``: requests then carry the team's
        presence and open counts (:func:`rulekit.runtime.planning.prepare`)."""
        wanted = self._wanted
        return wanted is not None and wanted.engine.reads_team

    def warm(self) -> None:
        """Start the workers now rather than at the first request."""
        taken = []
        try:
            for _ in range(self.size):
                worker = self._idle.get()
                taken.append(worker)
                if not self._closed:
                    taken[-1] = self._ready(worker)
        finally:
            for worker in taken:
                self._idle.put(worker)

    def evaluate(self, request: Request) -> list[Evaluation] | Refusal:
        """Evaluate in an idle worker (waiting for one); a refusal when over a budget or when
        workers die on it twice."""
        died = ""
        for _ in range(2):  # a worker may die of something else: one more try on a fresh one
            answer = self._evaluate_once(request)
            if not isinstance(answer, _Died):
                return answer
            died = answer.reason
        return Refusal(died)

    def evaluate_many(self, requests: list[Request]) -> list[list[Evaluation] | Refusal]:
        """:meth:`evaluate` for several requests in one exchange with a worker (each within
        its own CPU budget); when the worker runs out of their total wall budget or dies, each
        is evaluated again on its own, so that a refusal is always the request's own."""
        if len(requests) <= 1:
            return [self.evaluate(request) for request in requests]
        answer = self._evaluate_once(requests)
        if isinstance(answer, list) and len(answer) == len(requests):
            return answer
        return [self.evaluate(request) for request in requests]

    def close(self) -> None:
        """Stop every worker; a request in progress ends with :class:`WorkerGone`."""
        self._closed = True
        with self._lock:
            processes = list(self._live)
        for process in processes:  # starting or busy: their waiters see the connection close
            if process.is_alive():
                process.kill()
        while True:
            try:
                idle = self._idle.get_nowait()
            except queue.Empty:
                break
            if idle is not None:
                idle.kill()
        for _ in range(self.size + 1):
            self._idle.put(None)  # wake the waiters, which see the evaluator closed

    @overload
    def _evaluate_once(self, request: Request) -> list[Evaluation] | Refusal | _Died: ...

    @overload
    def _evaluate_once(
        self, request: list[Request]
    ) -> list[list[Evaluation] | Refusal] | Refusal | _Died: ...

    def _evaluate_once(self, request: Request | list[Request]) -> Any:
        if self._closed:
            raise WorkerGone("the evaluator is closed")
        worker = self._idle.get()
        try:
            if self._closed:
                raise WorkerGone("the evaluator is closed")
            worker = self._ready(worker)
            return self._ask(worker, request)
        except WorkerGone:
            worker = None
            raise
        finally:
            if self._closed and worker is not None:
                worker.kill()
                worker = None
            self._idle.put(worker)

    # workers ---------------------------------------------------------------------------------
    def _ready(self, worker: _Worker | None) -> _Worker:
        wanted = self._wanted
        if wanted is None:
            raise WorkerGone("no rules to evaluate yet")
        if worker is not None and worker.process.is_alive() and worker.version == wanted.version:
            return worker
        if worker is not None:
            worker.kill()
        return self._start(wanted)

    def _start(self, snapshot: Snapshot) -> _Worker:
        context = fork_server()
        ours, theirs = context.Pipe()
        lines, log_lines = context.Pipe(duplex=False)
        # none of the daemon's secrets: not in the environment, not in the config it loads
        config = snapshot.config
        secrets = secret_values(config)
        config_file = os.path.abspath(config.path) if config.path is not None else None
        config_text = snapshot.files.get(config_file) if config_file else None
        process = context.Process(
            target=serve,
            args=(
                theirs,
                self.config_path or config_file,  # RULEKIT_CONFIG is not in its environment
                self.rules_path,
                self.limits,
                worker_files(snapshot.files, config_file, secrets),
                worker_environment(os.environ, config.allowed_env(), secrets),
                interpolation_environment(
                    config_text if isinstance(config_text, bytes) else None, os.environ, secrets
                ),
                os.getcwd(),
                list(sys.path),
                log_lines,
            ),
            name="rulekit-evaluator",
            daemon=True,
        )
        with self._lock:
            if self._closed:
                raise WorkerGone("the evaluator is closed")
            process.start()
            self._live.add(process)
        theirs.close()
        log_lines.close()
        threading.Thread(
            target=relay_lines,
            args=(lines, lambda: secrets),
            name="rulekit-evaluator-log",
            daemon=True,
        ).start()
        try:
            if not ours.poll(START_TIMEOUT):
                raise WorkerGone("the evaluation worker did not start in time")
            ready = ours.recv()
        except (EOFError, OSError) as exc:
            self._discard(process)
            raise WorkerGone(f"the evaluation worker died while loading ({exc})") from exc
        except WorkerGone:
            self._discard(process)
            raise
        if not isinstance(ready, Ready) or ready.version != snapshot.version:
            self._discard(process)
            error = ready.error if isinstance(ready, Ready) else repr(ready)
            raise WorkerGone(
                f"the evaluation worker could not load rules {snapshot.version}: "
                f"{error or 'it loaded ' + str(ready.version)}"
            )
        self.restarts += 1
        return _Worker(process, ours, ready.version, self._live)

    def _discard(self, process: BaseProcess) -> None:
        if process.is_alive():
            process.kill()
        process.join(5)
        self._live.discard(process)

    def _ask(self, worker: _Worker, request: Request | list[Request]) -> Any:
        """The worker's answer to ``request`` (a list of answers to a list of requests), a
        refusal when over the wall budget, or :class:`_Died`."""
        requests = request if isinstance(request, list) else [request]
        counts = [len(r.events) - len(r.skip) for r in requests]
        deadline = sum(self.limits.request_wall(count) for count in counts)
        try:
            worker.connection.send(request)
            if worker.connection.poll(deadline):
                return worker.connection.recv()
        except (EOFError, OSError) as exc:
            worker.kill()
            if self._closed:
                raise WorkerGone("the evaluator is closed") from exc
            code = worker.process.exitcode
            return _Died(f"the evaluation worker died evaluating it (exit code {code})")
        worker.kill()
        if self._closed:
            raise WorkerGone("the evaluator is closed")
        ids = [e.id for r in requests for e in r.events if e.id not in r.skip]
        count = counts[0] if len(counts) == 1 else 0
        if count and self.limits.request_wall(count) < self.limits.event_wall * count:
            # the budget of the request's events together ran out, not an event's own
            first = next(e.id for e in requests[0].events if e.id not in requests[0].skip)
            more = f" and the {count - 1} after it" if count > 1 else ""
            return Refusal.naming(
                [first],
                f"evaluating event {{ids}}{more} took more than its time budget "
                f"({self.limits.webhook_wall:g} s for the events of its webhook together; "
                "processing.webhook_wall)",
            )
        return Refusal.naming(
            ids,
            "evaluating event {ids} took more than its time budget "
            f"({self.limits.event_wall:g} s per event; processing.event_wall)",
        )
