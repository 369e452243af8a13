"""``GET /console/api/stats``: the per-rule numbers of ``rulekit stats`` for the Admin view
(:mod:`rulekit.audit.stats`), the admin only. ``?since=7d`` (or an ISO time) counts from then;
without it, everything retention keeps."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from rulekit.audit import stats
from rulekit.audit.history import parse_since
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.workspace import API, ApiError, ok, query

if TYPE_CHECKING:
    from rulekit.server.console.routes import Console


class Stats:
    """The statistics endpoint of one console."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def routes(self) -> list[BaseRoute]:
        return [Route(f"{API}/stats", self.console.workspace._wrap(self.show), methods=["GET"])]

    async def show(self, request: Request, viewer: Viewer, rest: list[str]) -> Response:
        if not viewer.admin:
            raise ApiError(403, "statistics are for the admin")
        snapshot = self.console.get_snapshot()
        try:
            since = parse_since(
                query(request, ("since",)).get("since") or None,
                datetime.now(UTC),
                snapshot.config.timezone,
            )
        except ValueError as exc:
            raise ApiError(400, f"since: {exc}") from None
        loaded = [rule.name for rule in snapshot.engine.rules]
        rows = await self.console.workspace.read(
            lambda state: stats.rule_stats(state, since=since, loaded=loaded)
        )
        return ok(stats.as_document(rows, since=since))
