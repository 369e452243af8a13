"""The agents' workspace API under ``/console/api/``: conversations (list, view, reply, client
data, assignee, tags, priority), dead letters and set-aside webhooks. The contract is
``docs/console.md``.

Every request is identified (:mod:`rulekit.server.console.guard`: session cookie or bearer
token; 401 without); an agent sees and touches only the channels the directory gives them
(anything else is 404, exactly like what does not exist); writes are checked against
cross-site use, rate-limited per agent and logged with the agent's email (``console: ...``
lines of the ``rulekit.console`` logger). Reads use the store's read-only unit of work.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from rulekit.audit import repair
from rulekit.channels import body as body_json
from rulekit.channels.body import BodyError
from rulekit.errors import StoreUnavailable
from rulekit.runtime.logs import log
from rulekit.safetext import text_problem
from rulekit.server.console import conversations, idempotency
from rulekit.server.console.guard import WriteBudget, bearer_token, json_content
from rulekit.server.console.sessions import Viewer, identify, token_hash
from rulekit.server.console.team import TeamView
from rulekit.server.console.throttle import retry_after
from rulekit.server.console.web import same_origin, secure
from rulekit.store.base import JournaledState
from rulekit.store.history import NotInConversation
from rulekit.store.listing import MAX_PAGE, MAX_TEXT, ConversationQuery

if TYPE_CHECKING:
    from rulekit.server.console.routes import Console

logger = logging.getLogger("rulekit.console")

API = "/console/api"
PREFIX = f"{API}/conversations/"
MAX_BODY = 64 * 1024
VIEWS = ("all", "mine", "unassigned")
STATUSES = ("open", "closed")
KEPT_ANSWERS = frozenset({"assign", "tags", "priority"})
"""The writes whose answer a retry with the same ``Idempotency-Key`` gets again (a reply and a
change of client data find their first event in the store)."""

Handler = Callable[[Request, Viewer, list[str]], Awaitable[Response]]


class ApiError(Exception):
    """An answer other than success: its status, message and headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


STORE_UNAVAILABLE = "the store is unavailable; retry later"
"""What an agent is told when the store cannot be used: the store's own error names its file
or server, which is the operator's to read (in the daemon's log, and ``/healthz`` asked from
this machine), not an agent's."""


def store_unavailable(exc: StoreUnavailable) -> ApiError:
    """The answer to a request the store failed: 503 and a reason that names nothing of the
    store; its error is logged."""
    log(logger, logging.ERROR, "console: the store is unavailable", failure=exc)
    return ApiError(503, STORE_UNAVAILABLE, {"Retry-After": "5"})


def ok(data: Any, status: int = 200) -> Response:
    return secure(JSONResponse(data, status_code=status))


class Workspace:
    """The workspace API of one console (its sessions, throttle and store)."""

    def __init__(self, console: Console, writes: Any = None) -> None:
        self.console = console
        self.writes = writes
        """What performs replies, client changes and changes of the conversation's state
        (:class:`~rulekit.server.console.edits.ConversationEdits`); None: those answer 503."""
        self.budget = WriteBudget()
        self.keys = idempotency.IdempotencyKeys(console.store)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{API}/conversations", self._wrap(self.list_conversations), methods=["GET"]),
            Route(
                PREFIX + "{rest:path}",
                self._wrap(self.conversation),
                methods=["GET", "POST", "PATCH"],
            ),
            Route(f"{API}/dead-letters", self._wrap(self.dead_letters), methods=["GET"]),
            Route(
                f"{API}/dead-letters/{{job_id}}/retry",
                self._wrap(self.retry, write=True),
                methods=["POST"],
            ),
            Route(f"{API}/set-aside", self._wrap(self.set_aside), methods=["GET"]),
            Route(
                f"{API}/set-aside/{{inbox_id}}/requeue",
                self._wrap(self.requeue, write=True),
                methods=["POST"],
            ),
        ]

    # identity and guards ---------------------------------------------------------------------
    async def identify(self, request: Request) -> tuple[Viewer | None, bool]:
        """The viewer, and whether a bearer token (not the cookie) identified them."""
        token = bearer_token(request)
        try:
            if token is None:
                return await self.console.viewer(request), False
            address = request.client.host if request.client else None
            config = self.console.get_snapshot().config
            attempt = await self.console.throttle.attempt(
                address, lambda: identify(config, token_hash(token)) if token else None, clear=False
            )
        except StoreUnavailable as failed:
            raise store_unavailable(failed) from None
        if attempt.wait > 0:
            raise ApiError(
                429, "too many failed sign-ins", {"Retry-After": retry_after(attempt.wait)}
            )
        return attempt.found, True

    def _wrap(self, handler: Handler, *, write: bool = False) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            try:
                viewer, bearer = await self.identify(request)
                if viewer is None:
                    raise ApiError(401, "sign in first (session cookie or Bearer token)")
                is_write = write or request.method in ("POST", "PATCH")
                if is_write:
                    if not bearer and not (json_content(request) and same_origin(request)):
                        raise ApiError(
                            403,
                            "writes with the session cookie must come from the console's own "
                            "page, as application/json",
                        )
                    wait = self.budget.take(viewer.email or "admin")
                    if wait > 0:
                        raise ApiError(
                            429, "too many changes; slow down", {"Retry-After": retry_after(wait)}
                        )
                rest = self._segments(request)
                try:
                    return await handler(request, viewer, rest)
                except StoreUnavailable as failed:  # a read's, or one a handler let through
                    raise store_unavailable(failed) from None
            except ApiError as exc:
                return secure(
                    JSONResponse(
                        {"error": exc.message}, status_code=exc.status, headers=exc.headers
                    )
                )

        return endpoint

    @staticmethod
    def _segments(request: Request) -> list[str]:
        """The percent-decoded segments after ``/console/api/conversations/`` (a conversation
        id may hold ``/`` as ``%2F``: the raw path is split before decoding)."""
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path
        path = path.split("?", 1)[0]
        if not path.startswith(PREFIX):
            return []
        try:
            parts = [unquote(part, errors="strict") for part in path[len(PREFIX) :].split("/")]
        except UnicodeDecodeError:
            raise ApiError(400, "the path is not percent-encoded UTF-8") from None
        if any("\x00" in part for part in parts):  # no stored id holds one (bounded_key)
            raise ApiError(404, "no such conversation")
        return parts

    def team(self, viewer: Viewer) -> TeamView:
        """The team as ``viewer`` may see it (whom the console names to them)."""
        return TeamView(viewer, self.console.get_snapshot().config.directory)

    def channels_of(self, viewer: Viewer) -> frozenset[str]:
        """The channels ``viewer`` may see (the admin: every configured channel)."""
        if not viewer.admin:
            return viewer.channels
        snapshot = self.console.get_snapshot()
        return frozenset(snapshot.providers) | frozenset(snapshot.config.channels)

    async def read(self, work: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with self.console.store.reading() as state:
                return work(state, *args)

        return await run_in_threadpool(run)

    async def change(self, work: Callable[..., Any], *args: Any) -> Any:
        def run() -> Any:
            with self.console.store.transaction() as state:
                return work(state, *args)

        return await run_in_threadpool(run)

    # conversations ---------------------------------------------------------------------------
    async def list_conversations(
        self, request: Request, viewer: Viewer, rest: list[str]
    ) -> Response:
        query = self._query(request, viewer)
        page = await self.read(conversations.list_page, query, self.team(viewer))
        answer = {"conversations": page.conversations, "next_cursor": page.next_cursor}
        return await run_in_threadpool(ok, answer)  # (encoded off the event loop)

    def _query(self, request: Request, viewer: Viewer) -> ConversationQuery:
        params = query(request, QUERY)
        view = params.get("view", "all")
        if view not in VIEWS:
            raise ApiError(400, f"view must be one of {', '.join(VIEWS)}, not {view!r}")
        if view == "mine" and viewer.email is None:
            raise ApiError(400, "the admin has no conversations of their own: use view=all")
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise ApiError(400, f"status must be open or closed, not {status!r}")
        text = params.get("q") or None
        if text is not None and len(text) > MAX_TEXT:
            raise ApiError(400, f"q is longer than {MAX_TEXT} characters")
        written = params.get("limit", "50")
        # ASCII digits only, as ids in paths: int() also takes "+5", " 5", "0_5", other digits
        if not (written.isascii() and written.isdigit()) or len(written) > 3:
            raise ApiError(400, f"limit must be a whole number between 1 and {MAX_PAGE}")
        limit = int(written)
        if not 1 <= limit <= MAX_PAGE:
            raise ApiError(400, f"limit must be between 1 and {MAX_PAGE}")
        cursor = params.get("cursor") or None
        try:
            after = conversations.decode_cursor(cursor) if cursor else None
        except conversations.BadCursor as exc:
            raise ApiError(400, str(exc)) from None
        return ConversationQuery(
            channels=None if viewer.admin else viewer.channels,
            status=status,
            assignee=viewer.email if view == "mine" else None,
            unassigned=view == "unassigned",
            tag=params.get("tag") or None,
            text=text,
            after=after,
            limit=limit,
        )

    async def conversation(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        if not rest or not rest[0]:
            raise ApiError(404, "no such conversation")
        if request.method == "GET":
            if len(rest) == 1:
                channels = self.channels_of(viewer)
                if viewer.admin:  # a channel no longer configured keeps its conversations
                    channels |= {rest[0].split(":", 1)[0]}
                return await self.show(request, viewer, rest[0], channels)
            # the older form: conversations/{channel}/{conversation id}
            channel, conversation_id = rest[0], "/".join(rest[1:])
            if not viewer.may_see_channel(channel):
                raise ApiError(404, "no such conversation")
            return await self.show(request, viewer, conversation_id, {channel})
        if len(rest) != 2:
            raise ApiError(404, "no such endpoint")
        body = await self._body(request)
        handlers = {
            ("POST", "messages"): "reply",
            ("PATCH", "client"): "update_client",
            ("POST", "assign"): "assign",
            ("POST", "tags"): "tags",
            ("POST", "priority"): "priority",
        }
        name = handlers.get((request.method, rest[1]))
        if name is None:
            raise ApiError(405, f"{request.method} is not allowed on {rest[1]!r}")
        if self.writes is None:
            raise ApiError(503, "this console cannot change conversations")
        key = request.headers.get("idempotency-key")
        if key is None:
            result: Response = await getattr(self.writes, name)(self, viewer, rest[0], body, key)
            return result
        if not 0 < len(key) <= 200:
            raise ApiError(400, "Idempotency-Key must be 1 to 200 characters")
        # access first: a key's kept answer (the conversation as it was) is no more the
        # agent's to read than the conversation is once a reload withdrew its channel
        if await self.read(conversations.locate, rest[0], self.channels_of(viewer)) is None:
            raise ApiError(404, "no such conversation")
        who = viewer.email.lower() if viewer.email else "admin"
        print_ = idempotency.fingerprint(request.method, rest[1], rest[0], body)
        try:
            new, kept = await self.keys.claim(who, key, print_, rest[0])
        except idempotency.Conflict:
            raise ApiError(
                422, "this Idempotency-Key was used for a different request: use a new key"
            ) from None
        except idempotency.InFlight:
            raise ApiError(
                409,
                "a request with this Idempotency-Key is still in progress: retry it later",
                {"Retry-After": str(idempotency.RETRY_AFTER)},
            ) from None
        except StoreUnavailable as exc:
            raise store_unavailable(exc) from None
        if kept is not None:
            return secure(Response(kept[1], kept[0], media_type="application/json"))
        try:
            result = await getattr(self.writes, name)(self, viewer, rest[0], body, key)
        except BaseException:
            if new:
                await self.keys.release(who, key)
            raise
        if new and result.status_code >= 400:
            await self.keys.release(who, key)
        elif new:
            answer = bytes(result.body) if name in KEPT_ANSWERS else None
            await self.keys.finish(who, key, result.status_code, answer)
        return result

    async def show(
        self, request: Request, viewer: Viewer, conversation_id: str, channels: Collection[str]
    ) -> Response:
        params = query(request, PAGE_QUERY)
        before, after = params.get("before") or None, params.get("after") or None
        if before is not None and after is not None:
            raise ApiError(400, "give before or after, not both")
        config = self.console.get_snapshot().config
        team = self.team(viewer)

        def page(state: JournaledState) -> dict[str, Any] | None:
            return conversations.view(
                state, conversation_id, channels, team, before=before, after=after
            )

        try:
            found = await self.read(page)
        except NotInConversation:
            raise ApiError(
                400,
                f"{'before' if before is not None else 'after'} must name an event of this"
                " conversation (an event_id of its view)",
            ) from None
        if found is None:
            raise ApiError(404, "no such conversation")
        # what the panel offers: who can be assigned here, and the tags the config allows
        found["assignable"] = [
            {"email": agent.email, "name": agent.name}
            for agent in config.directory.agents
            if found["channel"] in agent.channels
        ]
        found["known_tags"] = list(config.raw.tags) if config.raw.tags is not None else None
        return await run_in_threadpool(ok, found)  # (encoded off the event loop)

    async def _body(self, request: Request) -> dict[str, Any]:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise ApiError(413, f"the request body is larger than {MAX_BODY} bytes")
        if not body.strip():
            return {}
        try:  # the rules webhooks follow (depth, numbers, keys), lone surrogates refused
            data = body_json.load(body, refuse_surrogates=True)
        except BodyError as exc:
            raise ApiError(400, str(exc).replace("the body", "the request body", 1)) from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return data

    # dead letters and set-aside webhooks -----------------------------------------------------
    def _scope(self, viewer: Viewer) -> frozenset[str] | None:
        return None if viewer.admin else viewer.channels

    async def dead_letters(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        found = await self.read(repair.dead_letters, self._scope(viewer))
        return ok({"dead_letters": found})

    async def set_aside(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        found = await self.read(repair.set_aside, self._scope(viewer))
        return ok({"set_aside": found})

    async def retry(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        job_id = _number(request.path_params["job_id"], "dead letter")
        result = await self._repair(repair.retry, job_id, viewer)
        audit(viewer, "retried a dead letter", job_id=job_id)
        self.console.wake_dispatcher()
        return ok({"dead_letter": result})

    async def requeue(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        inbox_id = _number(request.path_params["inbox_id"], "set-aside webhook")
        result = await self._repair(repair.requeue, inbox_id, viewer)
        audit(viewer, "requeued a set-aside webhook", inbox_id=inbox_id)
        self.console.wake_processor()
        return ok({"set_aside": result})

    async def _repair(
        self, work: Callable[..., dict[str, Any]], number: int, viewer: Viewer
    ) -> dict[str, Any]:
        try:
            result: dict[str, Any] = await self.change(work, number, self._scope(viewer))
        except repair.NotFound as exc:
            raise ApiError(404, str(exc)) from None
        except repair.NotRepairable as exc:
            raise ApiError(409, str(exc)) from None
        return result


QUERY = ("view", "status", "q", "limit", "cursor", "tag")
"""What the list's query string may hold."""
PAGE_QUERY = ("before", "after")
"""What a conversation's query string may hold (the event ids its pages start from)."""


def query(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The query string's parameters: each of ``names`` at most once (two values would be
    read differently by a proxy and by the API), nothing else; 400 otherwise."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in names:
            known = ", ".join(names) or "nothing"
            raise ApiError(400, f"unknown query parameter {name[:40]!r} (known: {known})")
        if name in found:
            raise ApiError(400, f"the query parameter {name!r} is given twice")
        if problem := text_problem(value):
            raise ApiError(400, f"the query parameter {name!r} {problem}")
        found[name] = value
    return found


def _number(value: str, what: str) -> int:
    # ASCII digits only: str.isdigit() holds for "²", which int() refuses
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise ApiError(404, f"no {what} {value!r}")
    return int(value)


def audit(viewer: Viewer, what: str, **fields: Any) -> None:
    """Log a change made through the console, with who made it."""
    log(logger, logging.INFO, f"console: {what}", agent=viewer.email or "admin", **fields)
