"""Who of the team is online: the console's side of presence.

An agent is online while a console stream (``/console/stream``) of theirs is connected: the
stream renews their ``connected_until`` in the store when it opens and at every keep-alive, for
:attr:`Presence.ttl` seconds, so a page closed (or a daemon gone) counts as offline once that
runs out. ``POST /console/api/presence {"status": "online"|"away"}`` records the agent's own
choice (the answer's ``presence`` is what ``assign`` sees: ``offline`` without a connected
stream); ``GET /console/api/presence`` answers the team's presence. Presence lives in the store,
so every daemon on it (and ``assign``) sees the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from rulekit.errors import StoreUnavailable
from rulekit.runtime.logs import log
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.workspace import API, ApiError, audit, ok
from rulekit.store.sql.presence import PRESENCE_STATUSES

if TYPE_CHECKING:
    from rulekit.server.console.routes import Console
    from rulekit.store.base import JournaledState

logger = logging.getLogger("rulekit.console")


class Presence:
    """Presence of one console: renewing it from streams, and its two endpoints."""

    def __init__(
        self, console: Console, now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.console = console
        self.now = now
        self.ttl = 3 * console.keepalive
        """Seconds a stream's renewal counts (three keep-alives: one late beat is no gap)."""

    def routes(self) -> list[BaseRoute]:
        wrap = self.console.workspace._wrap
        return [
            Route(f"{API}/presence", wrap(self.show), methods=["GET"]),
            Route(f"{API}/presence", wrap(self.change, write=True), methods=["POST"]),
        ]

    async def connected(self, viewer: Viewer | None) -> None:
        """A stream of ``viewer`` is (still) open: they count as connected for ``ttl``."""
        if viewer is None or viewer.email is None:
            return  # the admin is nobody to assign to
        try:
            await self._write(viewer.email, None, connected=True)
        except StoreUnavailable as exc:  # the stream goes on; the next beat tries again
            log(logger, logging.WARNING, "console: presence not recorded", failure=exc)

    async def signed_in(self, viewer: Viewer | None) -> None:
        """``viewer`` signed in: from now on ``assign`` looks at presence by default."""
        if viewer is not None and viewer.email is not None:
            try:
                await self._write(viewer.email, None)
            except StoreUnavailable as exc:  # signed in all the same: their stream records it
                log(logger, logging.WARNING, "console: sign-in not recorded", failure=exc)

    async def signed_out(self, viewer: Viewer | None) -> None:
        """``viewer`` signed out: they count as offline at once, not for the rest of their
        last renewal, so that ``assign`` gives nothing more to an agent who has left (a page of
        theirs still open elsewhere counts them online again at its next keep-alive)."""
        if viewer is None or viewer.email is None:
            return
        email = viewer.email

        def work() -> None:
            with self.console.store.transaction() as state:
                now = self._clock(state)
                state.set_presence(email, connected_until=now, now=now)

        try:
            await run_in_threadpool(work)
        except StoreUnavailable as exc:  # signed out all the same: it runs out by itself
            log(logger, logging.WARNING, "console: sign-out not recorded", failure=exc)

    def _clock(self, state: JournaledState) -> datetime:
        """Now, by the store's clock where several daemons share it (PostgreSQL: the
        database's, which ``assign`` reads presence by), else by the console's: a daemon whose
        machine's clock ran behind wrote connections that had run out for everyone else."""
        shared = state.timers_clock() if self.console.store.shared else None
        return shared or self.now()

    async def _write(self, email: str, status: str | None, *, connected: bool = False) -> None:
        def work() -> None:
            with self.console.store.transaction() as state:
                now = self._clock(state)
                until = now + timedelta(seconds=self.ttl) if connected else None
                state.set_presence(email, status=status, connected_until=until, now=now)

        await run_in_threadpool(work)

    async def _team(self) -> dict[str, str]:
        def work() -> dict[str, str]:
            with self.console.store.reading() as state:
                return state.presence(now=self._clock(state))

        return await run_in_threadpool(work)

    # endpoints -------------------------------------------------------------------------------
    async def show(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        """The presence of every agent of the directory the viewer may see (the admin: all;
        an agent: those sharing a channel with them)."""
        team = await self._team()
        directory = self.console.get_snapshot().config.directory
        agents = [
            {
                "email": agent.email,
                "name": agent.name,
                "status": team.get(agent.email.lower(), "offline"),
            }
            for agent in directory.agents
            if viewer.may_see_agent(agent)
        ]
        return ok({"agents": agents})

    async def change(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        if viewer.email is None:
            raise ApiError(400, "the admin has no presence: sign in as an agent")
        body = await self.console.workspace._body(request)
        status = body.get("status")
        if status not in PRESENCE_STATUSES or set(body) != {"status"}:
            raise ApiError(400, 'send {"status": "online"} or {"status": "away"}')
        await self._write(viewer.email, str(status))
        audit(viewer, f"is {status}")
        team = await self._team()
        presence = team.get(viewer.email.lower(), "offline")
        return ok({"email": viewer.email, "status": status, "presence": presence})
