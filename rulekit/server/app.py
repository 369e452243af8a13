"""The daemon's ASGI application: webhooks, ``/healthz``, ``/metrics`` and the console.

The client's address and scheme come from ``X-Forwarded-*`` headers only when the connection
is from loopback or a proxy of ``server.trusted_proxies`` (:mod:`rulekit.server.proxy`).

Built by :func:`create_app` around a :class:`~rulekit.server.daemon.Daemon`; the app's
lifespan starts and stops the daemon's workers, so the same app runs under ``rulekit run`` and
under any ASGI server.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rulekit.runtime.logs import access_line, access_logged
from rulekit.server.ingest import ROUTES, Webhooks
from rulekit.server.proxy import ForwardedHeaders, from_this_machine

if TYPE_CHECKING:
    from rulekit.server.daemon import Daemon


class AccessLog:
    """One log line per request, with the webhook secret redacted (replaces uvicorn's)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access_logged():  # nothing to time nor to watch
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client")
            access_line(
                scope["method"],
                scope["path"],
                status,
                time.monotonic() - started,
                f"{client[0]}:{client[1]}" if client else None,
            )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": exc.detail}, status_code=exc.status_code, headers=exc.headers or None
    )


def console_routes(daemon: Daemon) -> list[BaseRoute]:
    """The agents' console, when this rulekit has it (``rulekit.server.console``)."""
    if not daemon.snapshot.config.raw.console.enabled:
        return []
    from rulekit.server.console import Console
    from rulekit.server.console.edits import ConversationEdits

    refused = daemon.metrics.signin_refused
    console = Console(
        daemon.feed,
        lambda: daemon.snapshot,
        daemon.store,
        on_refused=lambda reason: refused.labels(reason=reason).inc(),
        wake=daemon.wake,
        writes=ConversationEdits(daemon),
    )
    return console.routes()


def create_app(daemon: Daemon) -> Starlette:
    """The ASGI app of ``daemon``."""

    async def healthz(request: Request) -> Response:
        # the reasons name files and servers: for this machine's eyes (a proxy's request
        # stands for its client, see ForwardedHeaders)
        status, body = daemon.health(reasons=from_this_machine(request.scope))
        return JSONResponse(body, status_code=status)

    async def metrics(request: Request) -> Response:
        daemon.update_gauges()
        return Response(daemon.metrics.render(), media_type=daemon.metrics.content_type)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await daemon.start()
        try:
            yield {}
        finally:
            await daemon.stop()

    routes: list[BaseRoute] = [
        *(Route(path, daemon.ingest, methods=["POST"]) for path in ROUTES),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *console_routes(daemon),
    ]
    middleware = [
        Middleware(Webhooks, ingest=daemon.ingest),
        # then: every later layer (the access log too) sees the client behind the proxy
        Middleware(ForwardedHeaders, trusted=daemon.snapshot.config.raw.server.trusted_proxies),
        Middleware(AccessLog),
    ]
    if daemon.snapshot.config.raw.console.enabled:
        from rulekit.server.console.web import ConsoleHeaders

        # the console's security headers on every response under /console (its 404s too)
        middleware.append(Middleware(ConsoleHeaders))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=middleware,
    )
    # no redirect for a path with a slash too many: its Location would repeat the query (a
    # console search may name a client) on the scheme and host this server is told, plain
    # http:// behind a proxy that does not forward its scheme; such a path is answered 404
    app.router.redirect_slashes = False
    return app
