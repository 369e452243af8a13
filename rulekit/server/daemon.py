"""The daemon's lifecycle: start, hot reload, graceful shutdown.

* **Start** (:class:`Daemon`): rules and config are loaded and validated; invalid ones refuse
  the start (the CLI prints every error and exits 1). Actions whose service is not configured
  (an empty token, no Chatra API keys) do not refuse it, unless ``--strict``: they are reported
  in the log at startup, in ``/healthz`` (``warnings``) and in the console, and their jobs are
  dead-lettered with that reason (retryable once configured). The store is opened from the
  config's ``storage``.
* **Reload** on a change to the rules or the config file (watched) and on SIGHUP: see
  :mod:`rulekit.server.reloading`.
* **Fetching**: channels that fetch their own updates (long polling) are run by
  :class:`rulekit.server.fetching.Fetchers`, restarted on reload and stopped first at shutdown.
* **Shutdown** on SIGTERM/SIGINT: the server stops accepting connections, answered requests are
  finished; the processor finishes its round, the dispatcher lets the calls under way end and
  records them (:meth:`Dispatcher.stop`) and hands back the claims of jobs that were waiting;
  then the store and the actions' network clients are closed, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread

from rulekit.actions.pacing import Pacer
from rulekit.audit import retention
from rulekit.channels.hookrunner import HookRunner
from rulekit.errors import ConfigError
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.dispatcher import DEFAULT_LEASE, Dispatcher
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.known import load_known
from rulekit.runtime.logs import log, use_log_key
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.owner import owner_name
from rulekit.runtime.processor import Processor
from rulekit.runtime.reporting import report
from rulekit.runtime.timers import Fired, TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.secrets import guessable_webhook_secrets, written_in_open_file
from rulekit.server.app import create_app
from rulekit.server.fetching import Fetchers
from rulekit.server.ingest import Ingest
from rulekit.server.lookups import Lookups
from rulekit.server.reloading import RELOAD_BUDGET, Reloading
from rulekit.snapshot import Snapshot, freeze_heap, problems_of
from rulekit.store import open_store
from rulekit.store.base import JournaledStore

logger = logging.getLogger("rulekit.daemon")

RETENTION_INTERVAL = 3600.0
SCHEMA_INTERVAL = 30.0
"""Seconds between two looks at the store's schema version: a newer rulekit (another daemon on
the store, upgraded first) may have migrated it, and this daemon then takes no more work."""
SWITCH_INTERVAL = 0.001
"""Seconds a thread runs Python before it hands the GIL to another that waits (CPython's
default is 0.005). The store's transactions run in threads and release the GIL at every
statement; with the event loop busy, each statement waited up to the interval to go on, so a
transaction of 50 statements could hold the store (and the acknowledgements waiting for it)
for a quarter of a second."""
GC_THRESHOLDS = (10_000, 10, 10)
"""The cyclic garbage collector's thresholds in the daemon (CPython's default: 700, 10, 10).
A young collection walks every young object still alive, and under load that is the state
of every request in flight: at the default it ran every few webhooks and took about 40 µs
of CPU per webhook. Objects freed by reference counting (nearly all of a request's) do not
count towards the threshold, so what may wait longer for a collection is cyclic garbage
only, bounded by the first threshold."""


class StrictRefusal(ConfigError):
    """``--strict`` and some action's service is not configured (exit 1, like ``check``)."""


class Daemon(Reloading):
    """One running rulekit: its snapshot, store, workers and HTTP app."""

    def __init__(
        self,
        config_path: str | Path | None,
        rules_path: str | Path | None = None,
        *,
        strict: bool = False,
        job_lease: float = DEFAULT_LEASE,
        watch: bool = True,
        store: JournaledStore | None = None,
        reload_budget: float = RELOAD_BUDGET,
        clock: Callable[[], datetime] | None = None,
        schema_interval: float = SCHEMA_INTERVAL,
    ) -> None:
        self.freezes_heap = False
        """Whether the loaded rules are kept out of the garbage collector's work
        (:func:`~rulekit.snapshot.freeze_heap`), at start, as soon as a reload swapped them in
        and once its old rules are released: set by ``rulekit run``, the process's only
        daemon."""
        self.reload_budget = reload_budget
        self.clock = clock
        """What time the timers see (default: the system's clock; tests move their own)."""
        self.config_path = Path(config_path) if config_path else None
        self.rules_path = Path(rules_path) if rules_path else None
        # the evaluation workers load the rules to evaluate them; this process only knows them
        self._snapshot = load_known(self.config_path, self.rules_path)
        self.problems = problems_of(self._snapshot)
        if strict and self.problems:
            raise StrictRefusal(
                "not starting (--strict): "
                + "; ".join(self.problems)
                + f" ({len(self.problems)} problem(s))"
            )
        self.strict = strict
        self.watch = watch
        self.sighups_held: list[int] = []
        """SIGHUPs received before the daemon listened for them (``rulekit run`` holds them)."""
        self.job_lease = job_lease
        self.metrics = Metrics()
        self.metrics.watch_up.set(1 if watch else 0)
        self.feed = LiveFeed()
        config = self._snapshot.config
        self.store = store or open_store(config.raw.storage, config.base_dir)
        self._own_store = store is None
        with self.store.transaction() as state:  # the log's ids hashed with the store's key
            use_log_key(state.log_key(make=True))
        self.ready = False
        self._lookups: Lookups | None = None
        self.last_reload: dict[str, Any] = {"ok": True, "at": None, "errors": []}
        self.stopping = False
        self._tasks: list[asyncio.Task[Any]] = []
        self._reload_lock: asyncio.Lock | None = None
        self._queued = None
        self._requests = set()
        self._loads = []
        self._replaced = {}
        self._stop_watching: asyncio.Event | None = None
        self._set_rules_metrics()
        self.commit: GroupCommit | None = None
        self.evaluator: Evaluator | None = None
        self.processor: Processor | None = None
        self.timers: TimerRunner | None = None
        self.dispatcher: Dispatcher | None = None
        self.fetchers: Fetchers | None = None
        self._unlisten: Callable[[], None] | None = None
        self._round_trips = 0
        """The store's round trips counted into the metrics so far."""
        self.schema_interval = schema_interval
        self.outdated: str | None = None
        """Why this daemon takes no more work: a newer rulekit migrated the store's schema."""
        self.hooks = HookRunner()
        """Where the plugins' code a request waits for runs (off the event loop, bounded)."""
        self.ingest = Ingest(lambda: self._snapshot, None, self.metrics, self._wake, self.hooks)  # type: ignore[arg-type]
        self.app = create_app(self)

    @property
    def snapshot(self) -> Snapshot:
        """The active snapshot (swapped whole on reload)."""
        return self._snapshot

    def _wake(self) -> None:
        if self.processor is not None:
            self.processor.wake()

    def wake(self, queue: str) -> None:
        """Tell a worker there is work: ``"inbox"`` (the processor), ``"outbox"`` (the
        dispatcher) or ``"timers"``."""
        if queue == "inbox":
            self._wake()
        elif queue == "timers":
            if self.timers is not None:
                self.timers.wake()
        elif self.dispatcher is not None:
            self.dispatcher.wake()

    def _timers_fired(self, fired: list[Fired]) -> None:
        jobs = False
        for item in fired:
            for processed in [item.processed, *item.also] if item.processed else []:
                report(processed, self.metrics, self.feed)
                jobs = jobs or bool(processed.jobs)
        if jobs and self.dispatcher is not None:
            self.dispatcher.wake()

    # lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the workers (the app's lifespan calls this)."""
        # host names are looked up one at a time per name, off the default executor: a name
        # whose DNS never answers holds one thread, not every lookup of every service's calls
        self._lookups = Lookups()
        self._lookups.install(asyncio.get_running_loop())
        self.commit = GroupCommit(self.store)
        self.commit.start()
        self.evaluator = _evaluator(self)
        self.ingest.commit = self.commit
        self.dispatcher = Dispatcher(
            self.commit,
            lambda: self._snapshot,
            metrics=self.metrics,
            feed=self.feed,
            pacer=Pacer(),
            lease=self.job_lease,
            evaluator=self.evaluator,
            hooks=self.hooks,
        )
        self.timers = TimerRunner(
            self.store,
            lambda: self._snapshot,
            self.evaluator,
            owner=owner_name(),
            on_fired=self._timers_fired,
            now=self.clock or (lambda: datetime.now(UTC)),
        )
        self.processor = Processor(
            self.store,
            lambda: self._snapshot,
            self.evaluator,
            metrics=self.metrics,
            feed=self.feed,
            on_jobs=self.dispatcher.wake,
            on_timers=self.timers.wake,
        )
        self.dispatcher.arrival = self.processor.arrival
        self.dispatcher.on_timers = self.timers.wake
        self.dispatcher.on_changes = self.processor.changes_recorded
        self.dispatcher.recorded_event = self.processor.recorded_event
        self._reload_lock = asyncio.Lock()
        self._stop_watching = asyncio.Event()
        if self.freezes_heap:
            freeze_heap()
        self._tasks = [
            asyncio.create_task(self.processor.run(), name="rulekit-processor"),
            asyncio.create_task(self.dispatcher.run(), name="rulekit-dispatcher"),
            asyncio.create_task(self.timers.run(), name="rulekit-timers"),
        ]
        self.fetchers = Fetchers(
            self.commit,
            lambda: self._snapshot,
            self.metrics,
            self._wake,
            pacer=self.dispatcher.pacer,  # a fetcher's 429 pauses the replies, and back
        )
        self.fetchers.follow(self._snapshot)
        if self.watch:
            self._tasks.append(asyncio.create_task(self._watch(), name="rulekit-watch"))
        self._tasks.append(asyncio.create_task(self._retention(), name="rulekit-retention"))
        self._tasks.append(asyncio.create_task(self._schema_watch(), name="rulekit-schema"))
        for task in self._tasks:
            task.add_done_callback(_said_if_failed)
        loop = asyncio.get_running_loop()

        def heard(queue: str) -> None:  # from the store's thread
            loop.call_soon_threadsafe(self.wake, queue)

        # other daemons' new work (a store shared by several): taken up at once, not polled
        self._unlisten = self.store.listen(heard)
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._sighup)
            if self.sighups_held:  # asked while it started: the files may have changed since
                self.sighups_held.clear()
                self._sighup()
        for problem in self.problems:
            log(logger, logging.WARNING, f"not configured: {problem}")
        for exposed in (
            self.store.exposure(),
            written_in_open_file(self.snapshot.config),
            guessable_webhook_secrets(self.snapshot.config),
        ):
            if exposed:
                log(logger, logging.WARNING, exposed)
        self.ready = True
        log(
            logger,
            logging.INFO,
            "rulekit started",
            rules=len(self._snapshot.engine.rules),
            rules_version=self._snapshot.version,
            store=repr(self.store),
        )

    async def stop(self) -> None:
        """Hand back or finish in-flight work and close everything (idempotent)."""
        if not self.ready:
            return
        self.ready = False
        self.stopping = True  # no reload swaps a new set in from now on
        self.ingest.accepting = False
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        assert self.processor and self.dispatcher and self.commit and self._stop_watching
        if self.fetchers is not None:  # no more updates in; what was fetched is in the inbox
            await self.fetchers.stop()
        if self._unlisten is not None:
            await anyio.to_thread.run_sync(self._unlisten)
        self.processor.stop()
        if self.timers is not None:
            self.timers.stop()
        self._stop_watching.set()
        await self.dispatcher.stop()
        if self.evaluator is not None:  # ends an evaluation in progress; its item is kept
            await anyio.to_thread.run_sync(self.evaluator.close)
        for task in self._tasks:
            if task.get_name() in ("rulekit-retention", "rulekit-dispatcher", "rulekit-schema"):
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.commit.aclose()
        await self._close_clients(self._snapshot)
        await self._close_replaced()
        if self._lookups is not None:
            self._lookups.uninstall()
            self._lookups = None
        self.hooks.close()
        if self._own_store:
            await anyio.to_thread.run_sync(self.store.close)
        log(logger, logging.INFO, "rulekit stopped")

    # retention -------------------------------------------------------------------------------
    async def _retention(self) -> None:
        while True:
            await asyncio.sleep(RETENTION_INTERVAL)
            settings = self._snapshot.config.raw.retention
            try:
                removed = await anyio.to_thread.run_sync(
                    retention.purge, self.store, settings, datetime.now(UTC)
                )
                counts: dict[str, Any] = {str(k): v for k, v in removed.items()}
                log(logger, logging.INFO, "retention purge", **counts)
                # what was deleted leaves SQLite's write-ahead log too (as after rulekit
                # forget): its older copies stayed there, and in the database file, until
                # enough writes came to checkpoint it
                if any(removed.values()) and not await anyio.to_thread.run_sync(
                    self.store.checkpoint
                ):
                    log(
                        logger,
                        logging.WARNING,
                        "retention purge: the write-ahead log is in use and still holds older"
                        " copies of the deleted records until it is checkpointed",
                    )
            except Exception:
                log(logger, logging.ERROR, "retention purge failed", exc_info=True)

    # a newer rulekit's schema ----------------------------------------------------------------
    async def _schema_watch(self) -> None:
        """Look at the store's schema version now and then; once a newer rulekit has migrated
        it (a rolling upgrade: another daemon on the store started on the new version), stop
        taking work: the rows this version writes and the claims it makes are the older
        schema's. Calls under way end and their outcomes are recorded (a call cut off would be
        made again by the newer daemon); webhooks are answered 503, which their senders retry
        (another daemon takes them); ``/healthz`` says why until the daemon is upgraded."""
        while self.outdated is None:
            await asyncio.sleep(self.schema_interval)
            try:
                status = await anyio.to_thread.run_sync(self.store.schema_status)
            except Exception as exc:  # an unavailable store: the next look tells
                log(logger, logging.DEBUG, "schema version not read", failure=exc)
                continue
            if status is None or not status.too_new:
                continue
            self.outdated = (
                f"the store's schema is at version {status.current}, migrated by a newer "
                f"rulekit (this one knows {status.latest}): this daemon takes no more work; "
                "upgrade it and start it again"
            )
            log(logger, logging.CRITICAL, self.outdated)
            await self._drain()

    async def _drain(self) -> None:
        """Take no more work: no webhook, update, inbox item, timer or job; let the calls
        under way end and record their outcomes (what :meth:`stop` does first)."""
        self.stopping = True  # no reload starts fetchers again
        self.ingest.accepting = False
        assert self.processor and self.dispatcher
        if self.fetchers is not None:
            await self.fetchers.stop()
        self.processor.stop()
        if self.timers is not None:
            self.timers.stop()
        await self.dispatcher.stop()

    # operations ------------------------------------------------------------------------------
    def update_gauges(self) -> None:
        if self.dispatcher is not None:
            self.metrics.outbox_depth.set(self.dispatcher.held)
        trips = self.store.round_trips
        if trips is not None and trips > self._round_trips:
            self.metrics.store_round_trips.inc(trips - self._round_trips)
            self._round_trips = trips

    def stalled(self) -> list[str]:
        """Workers that made no progress for ``server.stall_after`` while work waits."""
        limit = self._snapshot.config.raw.server.stall_after.total_seconds()
        out = []
        processor, dispatcher = self.processor, self.dispatcher
        if processor is not None and processor.stalled(limit):
            out.append(f"the processor made no progress for {limit:g} s")
        if dispatcher is not None and dispatcher.stalled(limit):
            out.append(f"the dispatcher made no progress for {limit:g} s with jobs waiting")
        if self.fetchers is not None:
            out.extend(
                f"fetching updates for channel {channel!r} failed for {limit:g} s"
                for channel in self.fetchers.stalled(limit)
            )
        return out

    def health(self, *, reasons: bool = True) -> tuple[int, dict[str, Any]]:
        """``/healthz``: 200 when the store and rules are loaded, the workers run and make
        progress, and the store can be used (its last transaction committed, its file is still
        the one at its path). Without ``reasons`` (a request from another machine), the body
        says whether, not why: the store's error (its path, its server), the rules' warnings
        (their files) and a refused reload's errors (quoting the config) are left out."""
        running = self.ready and all(
            not task.done() for task in self._tasks if task.get_name() != "rulekit-watch"
        )
        stalled = self.stalled() if running else []
        store_problem = self.store.problem()
        if store_problem is None and self.commit is not None and self.commit.unavailable:
            store_problem = str(self.commit.unavailable)
        running = running and not stalled and store_problem is None and self.outdated is None
        body: dict[str, Any] = {
            "status": "ok" if running else "unavailable",
            "stalled": stalled,
            "store": store_problem or "ok",
            "rules_version": self._snapshot.version,
            "rules": len(self._snapshot.engine.rules),
            "loaded_at": self._snapshot.loaded_at.isoformat(),
            "last_reload": self.last_reload,
            "watch": "off" if not self.watch else self.watch_problem or "ok",
            "warnings": self.problems,
        }
        if self.outdated is not None:
            body["outdated"] = self.outdated if reasons else True
        if not reasons:
            body["store"] = "ok" if store_problem is None else "unavailable"
            body["last_reload"] = {k: v for k, v in self.last_reload.items() if k != "errors"}
            if self.watch and self.watch_problem is not None:  # (it names the folders)
                body["watch"] = "failing"
            del body["warnings"]
        return (200 if running else 503), body


def _said_if_failed(task: asyncio.Task[None]) -> None:
    """Log a worker task that ended with an exception (a bug: each catches what it expects
    and goes on), with its traceback, at once: ``/healthz`` then says the daemon is
    unavailable, and the log says why."""
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        log(logger, logging.CRITICAL, f"{task.get_name()} stopped", exc_info=failure)


def _evaluator(daemon: Daemon) -> Evaluator:
    settings = daemon.snapshot.config.raw.processing
    evaluator = Evaluator(
        daemon.config_path,
        daemon.rules_path,
        limits=Limits(
            event_cpu=settings.event_cpu.total_seconds(),
            event_wall=settings.event_wall.total_seconds(),
            webhook_cpu=settings.webhook_cpu.total_seconds(),
            webhook_wall=settings.webhook_wall.total_seconds(),
            worker_memory=settings.worker_memory_mb * 1024 * 1024,
        ),
        workers=settings.workers,
    )
    evaluator.want(daemon.snapshot)
    return evaluator


def serve(
    config_path: str | None,
    rules_path: str | None,
    host: str | None,
    port: int | None,
    strict: bool,
    job_lease: float = DEFAULT_LEASE,
    watch: bool = True,
    sighups_held: list[int] | None = None,
) -> int:
    """Run a daemon under uvicorn until SIGTERM/SIGINT; the exit code. ``sighups_held``: where
    SIGHUPs received while the process started were held (``rulekit run`` holds them from its
    first line); the daemon reloads once it listens if there is one."""
    from rulekit.config import find_config_path
    from rulekit.runtime.logs import configure_logging, secret_values
    from rulekit.server.http import build_server

    daemon = Daemon(
        find_config_path(config_path), rules_path, strict=strict, job_lease=job_lease, watch=watch
    )
    daemon.freezes_heap = True
    daemon.sighups_held = sighups_held if sighups_held is not None else []
    config = daemon.snapshot.config
    configure_logging(config.raw.logging, secrets=lambda: secret_values(daemon.snapshot.config))
    server = build_server(daemon, host, port)
    sys.setswitchinterval(SWITCH_INTERVAL)
    gc.set_threshold(*GC_THRESHOLDS)
    # uvicorn re-raises the signal that stopped it once it is done; a handler that does
    # nothing makes a clean shutdown exit 0 instead of dying by SIGTERM
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda signum, frame: None)
    server.run()
    return 0 if server.started else 1
