"""Hot reload of the daemon's rules and config (:class:`Reloading`).

**Reload** on a change to the rules or the config file (watched) and on SIGHUP: the new set is
loaded and validated completely in a worker thread, then swapped in one assignment. A load
that runs over ``reload_budget`` (60 s) is refused like an invalid set and abandoned, so it
never holds up the reloads after it. Events being evaluated keep the snapshot they started
with, and so do the dispatcher's calls under way (one waiting for its turn begins again with
the new set): the replaced snapshot's network clients are closed once
:data:`OLD_SNAPSHOT_GRACE` has passed and no call goes through them any more. An
invalid set is refused: the old one stays active and the error is logged, counted
(``rulekit_reload_errors_total``) and published to the console (``{"type": "reload", "ok":
false, "errors": [...]}``). Under ``--strict``, a set with a service that is not configured is
refused too (``rulekit run --strict`` would not start with it). Settings that need a restart
(``storage``, ``server``) are only reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from rulekit import sources, yamlsource
from rulekit.config import MAX_CONFIG_BYTES, find_config_path
from rulekit.errors import LocatedError, Location, RulekitError, ValidationErrors
from rulekit.rules.files import display_path
from rulekit.runtime.budget import run_within
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.known import load_known
from rulekit.runtime.logs import log, redact, secret_values
from rulekit.runtime.metrics import Metrics
from rulekit.server.fetching import Fetchers
from rulekit.server.watching import WatchPlan
from rulekit.snapshot import Snapshot, freeze_heap, problems_of, storage_errors

logger = logging.getLogger("rulekit.daemon")

OLD_SNAPSHOT_GRACE = 60.0
"""Seconds a replaced snapshot's network clients stay open at least (for what used it as it
was replaced: an evaluation, a console request); past them, until no call of the dispatcher
uses it (:class:`~rulekit.snapshot.Users`)."""
RETIRE_POLL = 1.0
"""Seconds between two looks at whether a replaced snapshot is still used by a call."""
RELOAD_BUDGET = 60.0
"""Seconds a reload may take to load and validate the new set before it is abandoned."""
WATCH_CHECK = 5.0
"""Seconds between two looks at whether a watched folder is still the one watched, when no
change came (see :mod:`rulekit.server.watching`)."""
WATCH_RETRY = 1.0
"""Seconds before a watch that failed is started again."""
MAX_LOADS = 2
"""Loads that may run at once, abandoned ones included: an abandoned load goes on in its
thread (a thread cannot be stopped), so a reload on each save of rules that load in longer
than the budget started one more each time, every one holding the memory of a whole set.
A reload beyond it is refused until one of them ends."""


def _errors(exc: BaseException) -> list[str]:
    if isinstance(exc, ValidationErrors):
        return [str(error) for error in exc.errors]
    return [str(exc)]


_SECRET_KEYS = ("secret", "token", "password", "key", "auth")
"""Parts of a setting's name that say it may hold a secret, for a config that does not load."""


def _new_secrets(config_path: Path | None) -> list[str]:
    """The secrets of the config now at ``config_path``: a refused reload's errors may quote
    one that only the new config holds (the log's filters know the old config's). For a config
    that does not load, each value of a setting whose name says it may be a secret."""
    from rulekit.loading import open_config

    try:
        _, config = open_config(str(config_path) if config_path else None)
        return secret_values(config)
    except Exception:
        pass
    try:
        path = find_config_path(str(config_path) if config_path else None)
        # as bounded as any load: a FIFO or a device is refused at once, not read until it
        # ends; a huge file is not read; aliases do not expand (an unbounded read held the
        # reload lock for the whole budget, and its thread went on reading after it)
        raw = sources.read_file(path, MAX_CONFIG_BYTES) if path is not None else None
        data = yamlsource.load(raw) if raw is not None else None
    except Exception:
        return []
    found: list[str] = []
    stack: list[tuple[str, Any]] = [("", data)]
    seen = 0
    while stack and seen < 100_000:  # aliases can make a small file a huge tree
        name, value = stack.pop()
        seen += 1
        if isinstance(value, dict):
            stack.extend((str(key).lower(), item) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((name, item) for item in value)
        elif value is not None and any(part in name for part in _SECRET_KEYS):
            found.append(str(value))
    if isinstance(data, dict) and isinstance(data.get("storage"), str):
        with contextlib.suppress(ValueError):
            password = urlsplit(data["storage"]).password
            found.extend((password, unquote(password)) if password else ())
    return found


def _emptied(old: sources.Files, new: sources.Files) -> list[LocatedError]:
    """The files that were not empty and are now: what a save under way looks like (``cmd >
    rules.yaml`` empties the file at once, then writes what ``cmd`` prints; an editor may
    truncate the file before it writes), never what an admin means (``[]`` is a rules file
    with no rules; a file is removed by removing it). Taken as it is, an emptied rules file
    drops its rules, and an emptied config every channel and agent, until the save ends."""
    return [
        LocatedError(
            "the file is empty now, as while a save is under way: write `[]` for a rules "
            "file with no rules",
            Location(display_path(Path(path))),
        )
        for path, data in new.items()
        if data == b"" and old.get(path)
    ]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Reloading:
    """The daemon's reloads: the new set loaded within a budget, swapped in whole, the old one's
    clients closed after a grace period; and the files watched for changes.

    A part of :class:`rulekit.server.daemon.Daemon`, which sets what is declared here.
    """

    config_path: Path | None
    rules_path: Path | None
    reload_budget: float
    strict: bool
    """``--strict``: a set with a service that is not configured is refused, as at start."""
    freezes_heap: bool
    metrics: Metrics
    feed: LiveFeed
    problems: list[str]
    last_reload: dict[str, Any]
    evaluator: Evaluator | None
    fetchers: Fetchers | None
    _snapshot: Snapshot
    _replaced: dict[asyncio.Task[None], Snapshot]
    """Replaced snapshots whose clients are not closed yet, by the task to close them
    (:meth:`_retire`)."""
    _reload_lock: asyncio.Lock | None
    _queued: asyncio.Future[bool] | None
    """The reload request waiting for its turn, which later requests join (:meth:`reload`)."""
    _requests: set[asyncio.Task[bool]]
    """SIGHUP's reload requests under way."""
    _loads: list[object]
    """A token per load running in its thread (:data:`MAX_LOADS`)."""
    _stop_watching: asyncio.Event | None
    watch_problem: str | None = None
    """Why the files are not being watched now (the watch fails and is started again every
    :data:`WATCH_RETRY` seconds), or None: ``/healthz`` and ``rulekit_watch_up`` say so, since
    a save is then not reloaded until the watch is back (or a SIGHUP)."""
    stopping: bool
    """The daemon is stopping: a reload swaps nothing in any more (its fetchers, workers and
    clients are being stopped and closed; a set swapped in now would start them again and
    never close them)."""

    @staticmethod
    async def _close_clients(snapshot: Snapshot) -> None:
        for closer in [a.aclose for a in snapshot.engine.actions.values()] + [
            p.aclose for p in snapshot.providers.values()
        ]:
            try:
                await closer()
            except Exception:
                log(logger, logging.WARNING, "closing a network client failed", exc_info=True)

    def _sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload("SIGHUP"))
        self._requests.add(task)  # (the loop keeps only a weak reference to a task)
        task.add_done_callback(self._requests.discard)

    async def reload(self, reason: str = "request") -> bool:
        """Load the rules and config again and swap them in if valid; True when swapped.

        Requests coalesce: one made while another waits for its turn (a reload under way) is
        answered by that one, which reads the files after both were made. A burst of SIGHUPs
        (a script, logrotate's hook per file) or of changes is then one reload after the one
        under way, not one reload each, in a queue that took minutes with a large set."""
        assert self._reload_lock is not None
        queued = self._queued
        if queued is not None:
            return await asyncio.shield(queued)
        queued = self._queued = asyncio.get_running_loop().create_future()
        swapped = False
        try:
            async with self._reload_lock:
                self._queued = None  # a request from now on may come after the files are read
                swapped = await self._reload_now(reason)
        finally:
            if self._queued is queued:  # cancelled while waiting for its turn
                self._queued = None
            queued.set_result(swapped)
        return swapped

    async def _reload_now(self, reason: str) -> bool:
        """Reload now (the caller holds the reload lock)."""
        if self.stopping:
            return False
        loads = self._loads
        try:
            if len(loads) >= MAX_LOADS:
                raise RulekitError(
                    f"{len(loads)} earlier loads, abandoned over the reload budget, are "
                    "still running: reload again once one of them has ended"
                )
            token = object()
            loads.append(token)

            def load(config_path: Path | None, rules_path: Path | None) -> Snapshot:
                try:
                    return load_known(config_path, rules_path)
                finally:
                    loads.remove(token)

            new = await run_within(
                self.reload_budget,
                load,
                self.config_path,
                self.rules_path,
                what="loading the rules and config",
            )
            refused = _emptied(self._snapshot.files, new.files)
            # what `rulekit check` says is an error and `rulekit run` does not start with
            refused += [LocatedError(error) for error in storage_errors(new.config)]
            if self.strict:  # what `run --strict` would not start with, it does not reload
                refused += [
                    LocatedError(f"{problem} (refused: rulekit runs with --strict)")
                    for problem in problems_of(new)
                ]
            if refused:
                await self._close_clients(new)
                raise ValidationErrors(refused)
        except Exception as exc:
            try:
                secrets = await run_within(
                    self.reload_budget,
                    _new_secrets,
                    self.config_path,
                    what="reading the new config's secrets",
                )
            except Exception:
                secrets = []
            errors = [redact(error, secrets) for error in _errors(exc)]
            if not isinstance(exc, RulekitError):
                log(logger, logging.ERROR, "reload failed unexpectedly", exc_info=True)
            self.metrics.reload_errors.inc()
            self.metrics.last_reload_ok.set(0)
            self.last_reload = {"ok": False, "at": _now(), "errors": errors}
            for error in errors:
                log(logger, logging.ERROR, f"reload refused, old rules stay: {error}")
            self.feed.publish({"type": "reload", "ok": False, "errors": errors, "reason": reason})
            return False
        if self.stopping:  # it stopped while the set loaded: never used, closed at once
            await self._close_clients(new)
            log(logger, logging.INFO, "reload dropped: rulekit is stopping", reason=reason)
            return False
        old, self._snapshot = self._snapshot, new
        if self.freezes_heap:  # the new rules leave the collector's work at once, not
            gc.freeze()  # when the old ones are retired (their freeze_heap collects them)
        if self.evaluator is not None:
            self.evaluator.want(new)
        if self.fetchers is not None:
            self.fetchers.follow(new)
        self.problems = problems_of(new)
        for name in ("storage", "server"):
            if getattr(old.config.raw, name) != getattr(new.config.raw, name):
                log(logger, logging.WARNING, f"`{name}` changed: restart rulekit to apply it")
        self.metrics.reloads.inc()
        self.last_reload = {"ok": True, "at": _now(), "errors": []}
        self._set_rules_metrics()
        log(
            logger,
            logging.INFO,
            "rules reloaded",
            reason=reason,
            rules=len(new.engine.rules),
            rules_version=new.version,
        )
        for problem in self.problems:
            log(logger, logging.WARNING, f"not configured: {problem}")
        self.feed.publish(
            {
                "type": "reload",
                "ok": True,
                "rules_version": new.version,
                "rules": len(new.engine.rules),
                "warnings": self.problems,
                "reason": reason,
            }
        )
        if old is not new:
            task = asyncio.create_task(self._retire(old), name="rulekit-retire")
            self._replaced[task] = old
            task.add_done_callback(self._replaced.pop)
        return True

    async def _retire(self, old: Snapshot) -> None:
        """Close a replaced snapshot's clients after :data:`OLD_SNAPSHOT_GRACE`, once no call
        uses them; once it is released, freeze the heap again."""
        await asyncio.sleep(OLD_SNAPSHOT_GRACE)
        while old.users.count:  # a call still goes through them: closed, it would fail
            await asyncio.sleep(RETIRE_POLL)
        await self._close_clients(old)
        del old
        if self.freezes_heap:
            freeze_heap()

    async def _close_replaced(self) -> None:
        """At shutdown, once no call is made any more: close the clients of the replaced
        snapshots not retired yet."""
        for task, old in list(self._replaced.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self._close_clients(old)  # (closing twice is harmless)

    def watch_plan(self) -> WatchPlan:
        """What to watch for the config file and the rules location, as named."""
        config = self._snapshot.config
        rules = self.rules_path or (config.rules_path if config.path else Path("rules.d"))
        return WatchPlan.of(self.config_path, Path(rules))

    async def _watch(self) -> None:
        """Reload on each batch of relevant changes. Watch anew once a watched folder was
        replaced, deleted or created, or a symlink on the way to it points elsewhere (looked
        at after each batch, and every :data:`WATCH_CHECK` seconds without one), and reload
        once the new watch is on: a change made while no watch was on is not lost. A watch
        that fails (a file name that is no UTF-8 appearing in a watched folder ends
        watchfiles' watch; a folder gone as the watch starts) is started again
        :data:`WATCH_RETRY` seconds later, the same way."""
        import watchfiles

        stop = self._stop_watching
        assert stop is not None
        pending = False
        failing = False
        while not stop.is_set():
            plan = self.watch_plan()
            try:
                if not plan.folders:  # nothing to watch until one of them is back
                    raise FileNotFoundError(2, "none of the watched folders exists")
                # every batch comes here, relevant or not: watchfiles yields none of a batch
                # its filter empties, and the folder of the config, with the SQLite store
                # written at each webhook, would never be quiet long enough for its timeout
                async for changes in watchfiles.awatch(
                    *plan.folders,
                    watch_filter=None,
                    stop_event=stop,
                    debounce=300,
                    recursive=False,
                    rust_timeout=int(WATCH_CHECK * 1000),
                    yield_on_timeout=True,
                ):
                    if failing or self.watch_problem is not None:
                        log(logger, logging.INFO, "watching files again")
                    failing = False
                    self._watching(None)
                    if any(plan.relevant(*change) for change in changes) or pending:
                        pending = False
                        await self.reload("file change")
                    if self.watch_plan().identity != plan.identity:
                        pending = True
                        break
            except Exception as exc:
                self._watching(f"{type(exc).__name__}: {exc}")
                if not failing:  # said once, not at each attempt
                    log(
                        logger,
                        logging.WARNING,
                        f"watching files failed; watching again every {WATCH_RETRY:g} s "
                        "(SIGHUP reloads meanwhile)",
                        exc_info=True,
                    )
                failing = pending = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), WATCH_RETRY)

    def _watching(self, problem: str | None) -> None:
        """The watch is on (None) or fails (why)."""
        self.watch_problem = problem
        self.metrics.watch_up.set(0 if problem else 1)

    def _set_rules_metrics(self) -> None:
        self.metrics.rules_loaded.set(len(self._snapshot.engine.rules))
        self.metrics.rules_version.info({"version": self._snapshot.version})
        self.metrics.last_reload_ok.set(1 if self.last_reload["ok"] else 0)
