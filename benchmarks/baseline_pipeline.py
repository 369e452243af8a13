"""The baseline of ``benchmarks/e2e.py``: the least a durable webhook → Slack pipeline does in
Python on the daemon's stack, written by hand.

    python benchmarks/baseline_pipeline.py PORT SLACK_BASE_URL DATABASE

uvicorn (uvloop, httptools) and starlette receive the webhook; the body is parsed as JSON and
inserted into SQLite (WAL, ``synchronous=FULL``), group-committed in a worker thread (requests
arriving during a commit share the next one), then answered 200; one trivial condition (the
Chatra event's name) and an aiohttp ``POST`` of ``chat.postMessage`` to the fake Slack, at most
64 under way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SENDS = 64


class Pipeline:
    def __init__(self, slack: str, database: str) -> None:
        self.slack = slack
        self.db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS inbox (id INTEGER PRIMARY KEY, channel TEXT, body BLOB)"
        )
        self.pending: list[tuple[bytes, asyncio.Future[int]]] = []
        self.wakeup = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None
        self.slots = asyncio.Semaphore(SENDS)
        self.tasks: set[asyncio.Task[None]] = set()

    def insert(self, bodies: list[bytes]) -> list[int]:
        self.db.execute("BEGIN")
        ids = [
            int(
                self.db.execute(
                    "INSERT INTO inbox (channel, body) VALUES ('chat', ?)", (body,)
                ).lastrowid
                or 0
            )
            for body in bodies
        ]
        self.db.execute("COMMIT")
        return ids

    async def committer(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            batch, self.pending = self.pending, []
            ids = await asyncio.to_thread(self.insert, [body for body, _ in batch])
            for (_, future), row in zip(batch, ids, strict=True):
                future.set_result(row)

    async def receive(self, request: Request) -> JSONResponse:
        body = await request.body()
        data = json.loads(body)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.pending.append((body, future))
        self.wakeup.set()
        row = await future
        task = asyncio.create_task(self.act(data))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return JSONResponse({"status": "accepted", "id": row})

    async def act(self, data: dict[str, Any]) -> None:
        if data.get("eventName") not in ("chatStarted", "chatFragment"):
            return
        messages = data.get("messages") or [data.get("message") or {}]
        message_id = messages[0].get("id")
        assert self.session is not None
        async with (
            self.slots,
            self.session.post(
                f"{self.slack}chat.postMessage",
                json={"channel": f"C{message_id}", "text": f"new {message_id}"},
                headers={"Authorization": "Bearer xoxb-bench"},
            ) as response,
        ):
            await response.read()

    async def startup(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SENDS))
        self.tasks.add(asyncio.create_task(self.committer()))

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})


def main() -> None:
    port, slack, database = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    pipeline = Pipeline(slack, database)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await pipeline.startup()
        yield

    app = Starlette(
        routes=[
            Route("/webhooks/{channel}/{secret}", pipeline.receive, methods=["POST"]),
            Route("/healthz", pipeline.healthz),
        ],
        lifespan=lifespan,
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
