"""Cheap HTTP for the daemon benchmarks: a load generator and a fake Slack on raw asyncio
sockets, so that what drives and answers the daemon costs far less CPU than the daemon.

The load generator sends pre-built HTTP/1.1 requests over keep-alive connections and reads
the answers' status line and ``Content-Length`` only. The fake Slack answers every
``chat.postMessage`` with ``ok`` and records when each message's text arrived
(``time.monotonic()``, the same clock across the processes of one machine).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection


def post_request(host: str, port: int, path: str, body: bytes, headers: str = "") -> bytes:
    """One ``POST`` as bytes on the wire."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{headers}\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response; its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


@dataclass
class Sent:
    """What the load generator saw: per request, when it was sent and acknowledged."""

    sent: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def ack_latencies(self) -> list[float]:
        return [a - s for s, a in zip(self.sent, self.acked, strict=True) if a > 0]


class _Pool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened: list[asyncio.StreamWriter] = []

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.idle:
            return self.idle.pop()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened.append(writer)
        return reader, writer

    def close(self) -> None:
        for writer in self.opened:
            writer.close()


async def _one(pool: _Pool, request: bytes, index: int, out: Sent) -> None:
    out.sent[index] = time.monotonic()
    for _ in range(3):  # a kept-alive connection the server closed meanwhile: a new one
        reader, writer = await pool.get()
        try:
            writer.write(request)
            status = await _read_response(reader)
            break
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
    else:
        out.statuses[0] = out.statuses.get(0, 0) + 1
        return
    out.acked[index] = time.monotonic()
    out.statuses[status] = out.statuses.get(status, 0) + 1
    pool.idle.append((reader, writer))


async def closed_loop(host: str, port: int, requests: Sequence[bytes], connections: int) -> Sent:
    """Send every request, ``connections`` at a time, each as soon as one is answered."""
    out = Sent([0.0] * len(requests), [0.0] * len(requests))
    pool = _Pool(host, port)
    queue = iter(enumerate(requests))

    async def worker() -> None:
        for index, request in queue:
            await _one(pool, request, index, out)

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        pool.close()
    return out


async def open_loop(host: str, port: int, requests: Sequence[bytes], rate: float) -> Sent:
    """Send the requests on schedule, ``rate`` per second, whatever the answers (a new
    connection when every open one is busy)."""
    out = Sent([0.0] * len(requests), [0.0] * len(requests))
    pool = _Pool(host, port)
    tasks: list[asyncio.Task[None]] = []
    began = time.monotonic()
    try:
        for index, request in enumerate(requests):
            delay = began + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(pool, request, index, out)))
        await asyncio.gather(*tasks)
    finally:
        pool.close()
    return out


# the fake Slack -------------------------------------------------------------------------------
_OK = b'{"ok":true,"channel":"C0","ts":"1700000000.000001"}'
_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(_OK)).encode()
    + b"\r\n\r\n"
    + _OK
)


async def _serve_slack(port: int, control: Connection) -> None:
    arrivals: list[tuple[float, bytes]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                arrivals.append((time.monotonic(), body))
                writer.write(_ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    loop = asyncio.get_running_loop()
    control.send("ready")
    while True:
        command = await loop.run_in_executor(None, control.recv)
        if command == "stop":
            break
        texts: list[tuple[str, float]] = []
        for at, body in arrivals:
            try:
                texts.append((str(json.loads(body)["text"]), at))
            except (ValueError, KeyError, TypeError):
                continue
        arrivals.clear()
        control.send(texts)
    server.close()


def fake_slack(port: int, control: Connection) -> None:
    """Run the fake Slack until told ``"stop"``; ``"take"`` answers with the ``(text, arrival)``
    of every message received since the last take. (The target of a child process.)"""
    try:
        import uvloop

        uvloop.run(_serve_slack(port, control))
    except ImportError:
        asyncio.run(_serve_slack(port, control))
