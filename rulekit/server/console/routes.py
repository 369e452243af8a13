"""The agents' console over HTTP: sign-in, the page and its files, a JSON API, the live stream
(server-sent events) and the sounds.

Everything lives under ``/console``. The state (the recent messages, what was read of the
sessions, which are in the store) belongs to the :class:`Console` object that
:func:`console_routes` creates: nothing is kept at module level.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import mimetypes
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route

from rulekit.config import Config
from rulekit.errors import StoreUnavailable
from rulekit.runtime.feed import FeedClosed, LiveFeed, Subscription
from rulekit.runtime.logs import log
from rulekit.server.console import journal
from rulekit.server.console.audience import Recorder, as_told, visible
from rulekit.server.console.presence import Presence
from rulekit.server.console.sessions import Sessions, Viewer, hash_problems, identify, token_hash
from rulekit.server.console.stats import Stats
from rulekit.server.console.team import TeamView
from rulekit.server.console.throttle import SignInThrottle, retry_after
from rulekit.server.console.web import same_origin
from rulekit.server.console.web import secure as _secure
from rulekit.server.console.workspace import Workspace, store_unavailable
from rulekit.snapshot import Snapshot, problems_of
from rulekit.store.base import JournaledStore

logger = logging.getLogger("rulekit.console")

STATIC_DIR = Path(__file__).resolve().parent / "static"
COOKIE = "rulekit_console"
KEEPALIVE = 15.0
MAX_LOGIN_BODY = 4096
MAX_STREAMS = 16
"""Live streams one agent may hold open (a page each): more would let one agent's pages take
the connections webhooks need."""


def _error(status: int, message: str) -> Response:
    return _secure(JSONResponse({"error": message}, status_code=status))


class Console:
    """The console of one daemon: its sessions, its recorder of recent messages, its routes."""

    def __init__(
        self,
        feed: LiveFeed,
        get_snapshot: Callable[[], Snapshot],
        store: JournaledStore,
        *,
        keepalive: float = KEEPALIVE,
        clock: Callable[[], float] = time.time,
        on_refused: Callable[[str], None] | None = None,
        wake: Callable[[str], None] | None = None,
        writes: Any = None,
    ) -> None:
        self.feed = feed
        self.get_snapshot = get_snapshot
        self.store = store
        self.keepalive = keepalive
        self.sessions = Sessions(store, clock=clock, config=get_snapshot().config)
        self.throttle = SignInThrottle(store, clock)
        self._sessions_ended = False
        """Whether the sessions were ended since the console was turned off."""
        self.on_refused = on_refused
        self.recorder = Recorder(feed, functools.partial(journal.event_channel, store))
        self._static = {path.name: path for path in STATIC_DIR.iterdir() if path.is_file()}
        self.wake = wake
        """Tells the daemon's workers there is work (``"inbox"`` or ``"outbox"``)."""
        self.streams: Counter[str] = Counter()
        """Live streams open, by agent (email, or ``admin``): at most :data:`MAX_STREAMS`
        each, and ``console.max_streams`` together."""
        self.workspace = Workspace(self, writes)
        self.presence = Presence(self)
        self.stats = Stats(self)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(route.path, self._while_on(route.endpoint), methods=route.methods)
            if isinstance(route, Route)
            else route
            for route in self._routes()
        ]

    def _routes(self) -> list[BaseRoute]:
        return [
            Route("/console", self.root, methods=["GET"]),
            Route("/console/", self.index, methods=["GET"]),
            Route("/console/login", self.login_page, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Route("/console/static/{name}", self.static, methods=["GET"]),
            Route("/console/sounds/{name}", self.sound, methods=["GET"]),
            # the API's every endpoint identifies as the workspace's do: cookie or bearer token
            Route("/console/api/me", self.workspace._wrap(self.me), methods=["GET"]),
            Route("/console/api/recent", self.workspace._wrap(self.recent), methods=["GET"]),
            *self.workspace.routes(),
            *self.presence.routes(),
            *self.stats.routes(),
            Route("/console/stream", self.stream, methods=["GET"]),
        ]

    def on(self) -> bool:
        """Whether the loaded config has the console (``console.enabled``). A reload that
        turns it off ends every access at once: each request answers 404, as if the console
        were not there, and the sessions are over (:meth:`turned_off`)."""
        enabled = self.get_snapshot().config.raw.console.enabled
        if enabled:
            self._sessions_ended = False
        return enabled

    async def turned_off(self) -> None:
        """The console is off: end every session in the store, once (turned on again, nobody
        is signed in, on any daemon)."""
        if not self._sessions_ended:
            try:
                await self.sessions.end_all()
            except StoreUnavailable as exc:  # still 404: the next request tries again
                log(logger, logging.WARNING, "console: sessions not ended", failure=exc)
                return
            self._sessions_ended = True

    def _while_on(self, endpoint: Callable[[Request], Awaitable[Response]]) -> Any:
        async def guarded(request: Request) -> Response:
            try:
                if not self.on():
                    await self.turned_off()
                    return _error(404, "Not Found")
                return await endpoint(request)
            except StoreUnavailable as exc:  # (the workspace's endpoints answer it themselves)
                failed = store_unavailable(exc)
                refused = _error(failed.status, failed.message)
                refused.headers.update(failed.headers)
                return refused

        return guarded

    def wake_dispatcher(self) -> None:
        if self.wake is not None:
            self.wake("outbox")

    def wake_processor(self) -> None:
        if self.wake is not None:
            self.wake("inbox")

    # who is asking ---------------------------------------------------------------------------
    async def viewer(self, request: Request) -> Viewer | None:
        """The viewer of the request's session cookie, if it is a live session; raises
        :class:`~rulekit.errors.StoreUnavailable` when the store cannot say."""
        return await self.sessions.viewer(request.cookies.get(COOKIE), self.get_snapshot().config)

    # pages and files -------------------------------------------------------------------------
    async def root(self, request: Request) -> Response:
        return _secure(RedirectResponse("/console/", status_code=307))

    async def index(self, request: Request) -> Response:
        self.recorder.start()
        if await self.viewer(request) is None:
            return _secure(RedirectResponse("/console/login", status_code=303))
        return _secure(FileResponse(STATIC_DIR / "index.html", media_type="text/html"))

    async def login_page(self, request: Request) -> Response:
        return _secure(HTMLResponse(self._login_html()))

    def _login_html(self, *, failed: bool = False, wait: str | None = None) -> str:
        page = (STATIC_DIR / "login.html").read_text(encoding="utf-8")
        if failed:
            page = page.replace('id="error" class="error" hidden', 'id="error" class="error"')
        if wait is not None:
            page = page.replace(
                'id="throttled" class="error" hidden', 'id="throttled" class="error"'
            ).replace('<span id="retry-after"></span>', f'<span id="retry-after">{wait}</span>')
        if not _tokens_configured(self.get_snapshot().config):
            page = page.replace(
                'id="no-tokens" class="notice" hidden', 'id="no-tokens" class="notice"'
            )
        return page

    async def login(self, request: Request) -> Response:
        if not same_origin(request):
            return _error(403, "sign in from the console's own page")
        # the throttle's answer and the failure it counts are one transaction of the store
        # (a failure is counted after reading the counts again, held): sign-ins whose bodies
        # were held back until all had been let through are tried one after another
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY:
                return _error(413, "the sign-in form is too large")
        address = request.client.host if request.client else None
        fields = parse_qs(body.decode("utf-8", errors="replace"))
        token = (fields.get("token") or [""])[0].strip()
        digest = token_hash(token)
        config = self.get_snapshot().config
        attempt = await self.throttle.attempt(
            address, lambda: identify(config, digest) if token else None
        )
        if attempt.wait > 0:  # refused without looking at the token
            if self.on_refused is not None:
                self.on_refused(attempt.reason)
            seconds = retry_after(attempt.wait)
            refused = HTMLResponse(self._login_html(wait=seconds), status_code=429)
            refused.headers["Retry-After"] = seconds
            return _secure(refused)
        if attempt.found is None:
            return _secure(HTMLResponse(self._login_html(failed=True), status_code=401))
        # the session this browser held (signed in again, another agent at a shared computer)
        # ends: a copy of its cookie is of no more use than after signing out
        await self.sessions.close(request.cookies.get(COOKIE))
        session_id = await self.sessions.open(digest)
        await self.presence.signed_in(attempt.found)
        response = RedirectResponse("/console/", status_code=303)
        response.set_cookie(
            COOKIE,
            session_id,
            path="/console",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return _secure(response)

    async def logout(self, request: Request) -> Response:
        if not same_origin(request):
            return _error(403, "sign out from the console's own page")
        viewer = await self.viewer(request)
        await self.sessions.close(request.cookies.get(COOKIE))
        await self.presence.signed_out(viewer)
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict")
        return _secure(response)

    async def static(self, request: Request) -> Response:
        path = self._static.get(request.path_params["name"])
        if path is None:
            return _error(404, "no such file")
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return _secure(FileResponse(path, media_type=media_type), cache=True)

    async def sound(self, request: Request) -> Response:
        if await self.viewer(request) is None:
            return _error(401, "sign in first")
        name = request.path_params["name"].removesuffix(".wav")
        # only names the actions offer: a request never names a path
        path = _sounds(self.get_snapshot()).get(name)
        if path is None or not path.is_file():
            return _error(404, f"no sound {name!r}")
        media_type = mimetypes.guess_type(path.name)[0] or "audio/wav"
        return _secure(FileResponse(path, media_type=media_type), cache=True)

    # the JSON API ----------------------------------------------------------------------------
    async def me(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        snapshot = self.get_snapshot()
        return _secure(
            JSONResponse(
                {
                    "email": viewer.email,
                    "name": viewer.name,
                    "admin": viewer.admin,
                    "channels": sorted(viewer.channels),
                    "sounds": sorted(_sounds(snapshot)),
                    "rules_version": snapshot.version,
                    "loaded_at": snapshot.loaded_at.isoformat(),
                    # name the rules' files: the operator's (the admin's, the log's)
                    "problems": _problems(snapshot) if viewer.admin else [],
                }
            )
        )

    async def recent(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        """Recent events (with their jobs), dead letters and the last reload failure."""
        self.recorder.start()
        directory = self.get_snapshot().config.directory
        reload = self.recorder.last_reload

        def answer() -> JSONResponse:  # (encoded in the thread too: off the event loop)
            events, dead = journal.recent(self.store, viewer, directory)
            failed = as_told(viewer, reload) if reload and reload.get("ok") is False else None
            return JSONResponse({"events": events, "dead_letters": dead, "reload": failed})

        return _secure(await run_in_threadpool(answer))

    # the live stream -------------------------------------------------------------------------
    async def stream(self, request: Request) -> Response:
        session_id = request.cookies.get(COOKIE)
        viewer = await self.viewer(request)
        if viewer is None:
            return _error(401, "sign in first")
        who = viewer.email.lower() if viewer.email else "admin"
        most = self.get_snapshot().config.raw.console.max_streams
        if self.streams.total() >= most:  # the connections left are the webhooks'
            refused = _error(503, f"the console's {most} live streams are all open: retry later")
            refused.headers["Retry-After"] = str(round(self.keepalive))
            return refused
        if self.streams[who] >= MAX_STREAMS:
            refused = _error(
                429, f"{MAX_STREAMS} live streams are open already: close a console page"
            )
            refused.headers["Retry-After"] = str(round(self.keepalive))
            return refused
        # the place is taken before anything is awaited (the backlog's read): pages opened
        # together would otherwise all pass the counts above, then all be counted
        self.streams[who] += 1
        try:
            return await self._open_stream(request, viewer, who, session_id)
        except BaseException:
            self._closed(who)
            raise

    async def _open_stream(
        self, request: Request, viewer: Viewer, who: str, session_id: str | None
    ) -> Response:
        """The stream of ``viewer``, whose place (counted for ``who``) is taken: the stream
        gives it back when it ends; a refusal here gives it back at once."""
        self.recorder.start()
        last = _last_event_id(request)
        newest = self.recorder.recent[-1].get("seq", 0) if self.recorder.recent else 0
        if last is not None and last > newest:
            last = None  # the page saw a daemon that has restarted since: numbering began anew
        watching = [viewer]  # who the stream is for now (a reload may change their access)

        def counts(lost: dict[str, Any]) -> bool:
            # a lost message the viewer would not have received is not counted: the gap's
            # number must not tell how busy the channels they cannot see are. Its channel is
            # remembered for the messages after it that name only its event.
            self.recorder.remember(lost)
            who = watching[0]
            if who.admin or lost.get("type") == "reload":
                return visible(who, lost, None)
            return visible(who, lost, self.recorder.known_channel(lost))

        subscription = self.feed.subscribe(counts)
        backlog = (
            [m for m in self.recorder.recent if m.get("seq", 0) > last] if last is not None else []
        )
        if backlog:  # kept in memory: told again as the journal tells it now (erasures)
            try:
                backlog = await run_in_threadpool(journal.as_stored, self.store, backlog)
            except BaseException as exc:
                subscription.close()
                if not isinstance(exc, StoreUnavailable):
                    raise
                self._closed(who)
                failed = store_unavailable(exc)
                refused = _error(failed.status, failed.message)
                refused.headers.update(failed.headers)
                return refused

        async def messages() -> AsyncIterator[str]:
            sent = last or 0
            dropped = 0
            try:
                await self.presence.connected(await self.viewer_of(session_id))
                beat = time.monotonic()
                yield "retry: 2000\n\n"
                pending = list(backlog)
                while True:
                    if time.monotonic() - beat >= self.keepalive:  # a busy stream too
                        beat = time.monotonic()
                        await self.presence.connected(await self.viewer_of(session_id))
                    if pending:
                        message = pending.pop(0)
                    else:
                        try:
                            message = await asyncio.wait_for(subscription.get(), self.keepalive)
                        except FeedClosed:
                            return  # the daemon is shutting down
                        except TimeoutError:
                            if await self.viewer_of(session_id) is None:
                                return  # signed out or revoked: the page goes to sign-in
                            yield ": keep-alive\n\n"
                            continue
                    self.recorder.remember(message)
                    if subscription.dropped != dropped:
                        dropped = subscription.dropped
                        yield _sse({"type": "gap", "dropped": dropped})
                    seq = message.get("seq", 0)
                    if seq <= sent and last is not None:
                        continue
                    viewer = await self.viewer_of(session_id)
                    if viewer is None:
                        return
                    watching[0] = viewer
                    if await self._visible(viewer, message):
                        sent = max(sent, seq)
                        team = TeamView(viewer, self.get_snapshot().config.directory)
                        yield _sse(team.message(as_told(viewer, message)))
            finally:
                subscription.close()

        response = _CountedStream(messages(), functools.partial(self._ended, who, subscription))
        response.headers["X-Accel-Buffering"] = "no"
        return _secure(response)

    def _ended(self, who: str, subscription: Subscription) -> None:
        subscription.close()  # (the body's own finally never runs when it never started)
        self._closed(who)

    def _closed(self, who: str) -> None:
        self.streams[who] -= 1
        if self.streams[who] <= 0:
            del self.streams[who]

    async def viewer_of(self, session_id: str | None) -> Viewer | None:
        """The viewer of an open stream's session; None ends the stream (signed out, revoked,
        the console turned off, or the store unable to say: the page signs in again)."""
        try:
            if not self.on():  # an open stream ends with its console
                await self.turned_off()
                return None
            return await self.sessions.viewer(session_id, self.get_snapshot().config)
        except StoreUnavailable as exc:
            store_unavailable(exc)  # (logged)
            return None

    async def _visible(self, viewer: Viewer, message: dict[str, Any]) -> bool:
        if viewer.admin or message.get("type") == "reload":
            return visible(viewer, message, None)
        return visible(viewer, message, await self.recorder.channel(message))


class _CountedStream(StreamingResponse):
    """A stream that calls ``closed()`` when it ends, however it ends (also when the client
    left before its first byte: the body's generator never started then)."""

    def __init__(self, content: AsyncIterator[str], closed: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream")
        self._on_closed = closed

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_closed()


def console_routes(
    feed: LiveFeed,
    get_snapshot: Callable[[], Snapshot],
    store: JournaledStore,
    on_refused: Callable[[str], None] | None = None,
) -> list[BaseRoute]:
    """The console's routes (all under ``/console``), for the daemon to mount at its root;
    ``on_refused(reason)`` counts each throttled sign-in."""
    return Console(feed, get_snapshot, store, on_refused=on_refused).routes()


def _problems(snapshot: Snapshot) -> list[str]:
    """What is not configured (the daemon reports the same at startup)."""
    return [*problems_of(snapshot), *hash_problems(snapshot.config)]


def _tokens_configured(config: Config) -> bool:
    return bool(config.raw.console.admin_token_sha256) or any(
        agent.token_sha256 for agent in config.directory.agents
    )


def _sse(message: dict[str, Any]) -> str:
    data = json.dumps(message, separators=(",", ":"), default=str)
    seq = message.get("seq")
    head = f"id: {seq}\n" if isinstance(seq, int) else ""
    return f"{head}data: {data}\n\n"


def _last_event_id(request: Request) -> int | None:
    value = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return int(value) if value else None
    except ValueError:
        return None


def _sounds(snapshot: Snapshot) -> dict[str, Path]:
    """The sounds the loaded actions offer the console, by name."""
    found: dict[str, Path] = {}
    for action in snapshot.engine.actions.values():
        found.update(type(action).sounds(snapshot.config))
    return found
