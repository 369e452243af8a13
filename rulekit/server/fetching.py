"""Channels that fetch their own updates (long polling): the daemon's side.

A provider whose :meth:`~rulekit.channels.base.Provider.fetches_updates` is true gets a task
running its :meth:`~rulekit.channels.base.Provider.fetch_updates` with an :class:`InboxInbound`:
each update goes into the inbox as a webhook body would (the same size limit and JSON checks,
committed before ``accept`` returns, the same de-duplication by delivery key), and is then
processed like one. The lease ``hold`` takes is kept in the store, so of several daemons sharing
it one fetches a channel's updates at a time; the others take over when it stops renewing.

The tasks follow the active snapshot: a reload restarts them with the new providers (an update
fetched but not yet acknowledged to the service is fetched again, and recognised).

A fetcher that calls the channel's service shares its rate limit with the dispatcher's calls
through the same provider (Chatra's is per account): the inbound reads and sets the service's
pause under the key the dispatcher uses (:func:`~rulekit.actions.pacing.service_key` of the
provider's :attr:`~rulekit.channels.base.Provider.service_account`: every channel of one
account shares it), in the
daemon's :class:`~rulekit.actions.pacing.Pacer` and, with a store several daemons share
(:attr:`~rulekit.store.base.Journal.shares_pacing`), in the store, as a service-wide
Retry-After is shared (:mod:`rulekit.runtime.sharedpace`). The fetcher only waits for the
pauses and reports its own 429s: it takes no send slot, so it never holds a reply back longer
than a pause the service asked for.

A fetcher that ends with an unexpected exception (a bug, the database refusing what it writes)
is logged with its traceback and started again after a pause (0.5 s, doubling up to 30 s, as
after a store blip); one failing so again and again for ``server.stall_after`` shows in
``/healthz`` (:meth:`Fetchers.stalled`) until a run of it lasts that long. So does one whose
every try has failed that long, as it says (:meth:`InboxInbound.fetch_failing`: a revoked
token, a service that refuses the fetching or cannot be reached), until a try works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

import anyio.to_thread

from rulekit.actions.pacing import Pacer, service_key
from rulekit.channels import body as body_json
from rulekit.channels.base import Provider
from rulekit.channels.body import BodyError
from rulekit.errors import ChannelError, StoreUnavailable
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.logs import log
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.owner import owner_name
from rulekit.runtime.sharedpace import store_backoff
from rulekit.snapshot import Snapshot
from rulekit.store.base import JournaledState

logger = logging.getLogger("rulekit.fetching")

INLINE_CHECK_BYTES = 64 * 1024
"""Updates up to this size are checked on the event loop; bigger ones in a worker thread."""


class InboxInbound:
    """The inbox of one daemon, for one channel's fetched updates."""

    def __init__(
        self,
        channel: str,
        commit: GroupCommit,
        metrics: Metrics,
        on_accepted: Callable[[], None],
        owner: str,
        max_bytes: Callable[[], int],
        *,
        account: str | None = None,
        pacer: Pacer | None = None,
        shares_pacing: bool = False,
    ) -> None:
        self.channel = channel
        self.commit = commit
        self.metrics = metrics
        self.on_accepted = on_accepted
        self.owner = owner
        self.max_bytes = max_bytes
        """The size limit of a body (the config's ``server.max_body_bytes``, as reloaded)."""
        self.service = service_key(account if account is not None else channel)
        """The key of the service account's pauses, shared with the dispatcher's calls
        through every channel of that account."""
        self.pacer = pacer if pacer is not None else Pacer()
        """The daemon's pacer, shared with its dispatcher (the service's pauses)."""
        self.shares_pacing = shares_pacing
        """Whether other daemons call the service through the same store (then its pauses
        are agreed there too)."""
        self.held: set[str] = set()
        """The leases this inbound took (released when the daemon stops)."""
        self.failing_since: float | None = None
        """Since when (``time.monotonic()``) each try of fetching has failed, as the provider
        says (:meth:`fetch_failing`); None while it works."""

    async def accept(
        self, body: bytes, *, delivery_key: str, conversation_key: str | None = None
    ) -> bool:
        """See :meth:`rulekit.channels.base.Inbound.accept`."""
        limit = self.max_bytes()
        if len(body) > limit:
            raise ChannelError(f"the update is over {limit} bytes")
        if len(body) > INLINE_CHECK_BYTES:
            problem = await anyio.to_thread.run_sync(_problem, body)
        else:
            problem = _problem(body)
        if problem is not None:
            raise ChannelError(str(problem))
        channel = self.channel
        _, is_new = await self.commit.run(
            lambda state: state.append_inbox(
                channel, body, delivery_key=delivery_key, conversation_key=conversation_key
            )
        )
        if is_new:
            self.metrics.events_received.labels(channel).inc()
            self.on_accepted()
        return is_new

    def fetch_failing(self, problem: str | None) -> None:
        """See :meth:`rulekit.channels.base.Inbound.fetch_failing` (the provider logs the
        problem itself)."""
        if problem is None:
            self.failing_since = None
        elif self.failing_since is None:
            self.failing_since = time.monotonic()

    async def hold(self, name: str, seconds: float) -> bool:
        """See :meth:`rulekit.channels.base.Inbound.hold`."""
        key, owner = f"{self.channel}:{name}", self.owner
        held = await self.commit.run(lambda state: state.hold_lease(key, owner, seconds))
        if held:
            self.held.add(name)
        else:
            self.held.discard(name)
        return held

    async def service_paused(self) -> float:
        """See :meth:`rulekit.channels.base.Inbound.service_paused`. A store that cannot be
        reached leaves this daemon's own pauses."""
        key = self.service
        wait = self.pacer.paused_for(key)
        if self.shares_pacing:
            # as the dispatcher reads a service-wide pause (paused_keys): the key's row holds
            # only pauses while the service has no reply rate limit of its own (Chatra has none)
            try:
                shared = await self.commit.run(lambda state: state.paused_for([key]))
            except StoreUnavailable as exc:
                log(logger, logging.WARNING, "cannot read the service's pause", failure=exc)
            else:
                wait = max(wait, float(shared))
        return wait

    async def pause_service(self, seconds: float) -> None:
        """See :meth:`rulekit.channels.base.Inbound.pause_service`. A store that cannot be
        reached leaves the pause to this daemon."""
        key = self.service
        self.pacer.pause(key, seconds)
        if self.shares_pacing:
            try:
                # a transaction of its own: it locks the key's pacing row (see sharedpace)
                await self.commit.run(lambda state: state.pause_pace(key, seconds), alone=True)
            except StoreUnavailable as exc:
                log(logger, logging.WARNING, "cannot share the service's pause", failure=exc)

    async def release(self) -> None:
        """Give up the leases taken, so that another daemon takes over at once."""
        keys, owner = [f"{self.channel}:{name}" for name in self.held], self.owner
        self.held = set()

        def release(state: JournaledState) -> None:
            for key in keys:
                state.release_lease(key, owner)

        if keys:
            await self.commit.run(release)


def _problem(body: bytes) -> BodyError | None:
    try:
        body_json.load(body)
    except BodyError as exc:
        return exc
    return None


class Fetchers:
    """The fetching tasks of one daemon, one per channel whose provider fetches updates."""

    def __init__(
        self,
        commit: GroupCommit,
        snapshot: Callable[[], Snapshot],
        metrics: Metrics,
        on_accepted: Callable[[], None],
        *,
        pacer: Pacer | None = None,
    ) -> None:
        self.commit = commit
        self.snapshot = snapshot
        self.metrics = metrics
        self.on_accepted = on_accepted
        self.pacer = pacer if pacer is not None else Pacer()
        """The daemon's pacer (its dispatcher's): a fetcher and the dispatcher's calls to one
        channel's service share its pauses."""
        self.shares_pacing = bool(getattr(commit.store, "shares_pacing", False))
        # one owner per daemon, even for daemons sharing a process
        self.owner = f"{owner_name()}:{uuid.uuid4().hex[:8]}"
        self._tasks: dict[str, tuple[Provider, InboxInbound, asyncio.Task[None]]] = {}
        self._failing: dict[str, _Failing] = {}
        """The fetchers that ended with an exception, by channel, until one runs long enough."""

    def follow(self, snapshot: Snapshot) -> None:
        """Run the fetchers ``snapshot``'s providers ask for; stop the others."""
        wanted = {
            channel: provider
            for channel, provider in snapshot.providers.items()
            if _fetches(provider)
        }
        for channel, (provider, _inbound, task) in list(self._tasks.items()):
            if wanted.get(channel) is not provider:
                del self._tasks[channel]
                self._failing.pop(channel, None)
                task.cancel()
        for channel, provider in wanted.items():
            if channel not in self._tasks:
                inbound = InboxInbound(
                    channel,
                    self.commit,
                    self.metrics,
                    self.on_accepted,
                    self.owner,
                    lambda: self.snapshot().config.raw.server.max_body_bytes,
                    account=provider.service_account,
                    pacer=self.pacer,
                    shares_pacing=self.shares_pacing,
                )
                task = asyncio.create_task(
                    self._run(channel, provider, inbound), name=f"rulekit-fetch-{channel}"
                )
                self._tasks[channel] = (provider, inbound, task)

    @property
    def channels(self) -> list[str]:
        """The channels being fetched."""
        return sorted(self._tasks)

    def stalled(self, limit: float) -> list[str]:
        """The channels whose fetcher has been failing (ending with an exception each time it
        is started again, or saying that each of its tries fails:
        :meth:`InboxInbound.fetch_failing`) for more than ``limit`` seconds (``/healthz``)."""
        now = time.monotonic()
        stalled = {c for c, failing in self._failing.items() if failing.stalled(now, limit)}
        for channel, (_, inbound, _) in self._tasks.items():
            since = inbound.failing_since
            if since is not None and now - since > limit:
                stalled.add(channel)
        return sorted(stalled)

    async def _run(self, channel: str, provider: Provider, inbound: InboxInbound) -> None:
        delay = 0.0
        while True:
            log(logger, logging.INFO, "fetching updates", channel=channel)
            started = time.monotonic()
            failing = self._failing.get(channel)
            if failing is not None:
                failing.running_since = started
            try:
                await provider.fetch_updates(inbound)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug: kept with its traceback; started again later
                now = time.monotonic()
                limit = self.snapshot().config.raw.server.stall_after.total_seconds()
                if failing is None or now - started > limit:  # after a run that lasted
                    failing = self._failing[channel] = _Failing(now)
                    delay = 0.0
                failing.running_since = None
                delay = store_backoff(delay)
                log(
                    logger,
                    logging.ERROR,
                    f"fetching updates failed: {type(exc).__name__}",
                    channel=channel,
                    retry_in=delay,
                    exc_info=exc,
                )
            await asyncio.sleep(delay)

    async def stop(self) -> None:
        """Cancel every fetcher and give its leases up."""
        tasks, self._tasks = self._tasks, {}
        for _, _, task in tasks.values():
            task.cancel()
        await asyncio.gather(*(t for _, _, t in tasks.values()), return_exceptions=True)
        for _, inbound, _ in tasks.values():
            with contextlib.suppress(Exception):  # it runs out by itself otherwise
                await inbound.release()


class _Failing:
    """A fetcher that ended with an exception: since when it has been failing, and since when
    the run started again after it is going (None while it waits to be started)."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.running_since: float | None = None

    def stalled(self, now: float, limit: float) -> bool:
        if self.running_since is not None and now - self.running_since > limit:
            return False  # started again and running: no longer failing
        return now - self.since > limit


def _fetches(provider: Provider) -> bool:
    try:
        return provider.fetches_updates()
    except Exception:  # a plugin's bug must not stop the daemon
        logger.warning("provider %s: fetches_updates failed", provider.name, exc_info=True)
        return False
