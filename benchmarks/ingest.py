"""Durable ingest: webhooks/s and ack latency of ``POST /webhooks/...`` (persisted, fsynced,
before the 200) against a no-op endpoint in the same server, same run, same load generator.

    python benchmarks/ingest.py              # 8 s per endpoint, 64 connections
    python benchmarks/ingest.py --quick      # 3 s per endpoint
    python benchmarks/ingest.py --smoke      # 0.3 s per endpoint, 8 connections: does it run

Measured twice: with the processor working through the inbox alongside (the daemon as it runs),
and with processing paused (what persisting costs by itself; the inbox is processed later).
The server is the daemon's own ASGI app under uvicorn, in a child process, with one extra route
``POST /noop/{channel}/{secret}`` that reads the body and answers 200 (what HTTP, routing and
reading the body cost, without the store). The load generator is an aiohttp client on loopback
keeping N requests in flight. Target: durable >= 0.3x the no-op rate.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from daemon_common import SECRET, chat_started, free_port, percentile, write_config


def serve(config: str, port: int) -> None:
    """The child: the daemon's app plus the no-op route, under uvicorn."""
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from rulekit.server.daemon import Daemon

    daemon = Daemon(config, watch=False)

    async def noop(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "accepted", "id": 0})

    async def pause(request: Request) -> JSONResponse:
        daemon.processor.stop()  # measure persistence alone: the inbox is processed later
        return JSONResponse({"paused": True})

    daemon.app.router.routes.append(Route("/noop/{channel}/{secret}", noop, methods=["POST"]))
    daemon.app.router.routes.append(Route("/bench/pause-processing", pause, methods=["POST"]))
    uvicorn.run(daemon.app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def load(url: str, bodies: list[bytes], seconds: float, connections: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    stop_at = time.perf_counter() + seconds
    counter = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter
        while time.perf_counter() < stop_at:
            body = bodies[counter % len(bodies)]
            counter += 1
            started = time.perf_counter()
            async with session.post(url, data=body) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - began
    return {
        "rate": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--smoke", action="store_true", help="short phases: does it run")
    parser.add_argument("--serve", nargs=2, metavar=("CONFIG", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    import subprocess

    import httpx

    seconds = 3.0 if args.quick else 8.0
    distinct = 200_000  # bodies, more than are posted
    if args.smoke:
        seconds, distinct, args.connections = 0.3, 5_000, 8
    with tempfile.TemporaryDirectory() as folder:
        # no rules: this measures the ingest, not processing (which runs alongside anyway)
        config = write_config(Path(folder), "[]\n")
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(config), str(port)],
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            # unique bodies: every durable request is a new inbox row, not a duplicate
            bodies = [chat_started(n, f"m{n:09d}") for n in range(distinct)]
            noop = asyncio.run(
                load(f"{base}/noop/online-chat/{SECRET}", bodies, seconds, args.connections)
            )
            url = f"{base}/webhooks/online-chat/{SECRET}"
            durable = asyncio.run(load(url, bodies, seconds, args.connections))
            httpx.post(f"{base}/bench/pause-processing")
            alone = asyncio.run(load(url, bodies[::-1], seconds, args.connections))
        finally:
            child.terminate()
            child.wait(30)
    print(f"{args.connections} connections, {seconds:g} s per endpoint, body ~{len(bodies[0])} B")
    results = (("no-op", noop), ("durable", durable), ("durable, processing paused", alone))
    for name, result in results:
        print(
            f"{name:27} {result['rate']:6.0f} webhooks/s  p50 {result['p50']:6.1f} ms  "
            f"p99 {result['p99']:6.1f} ms  statuses {result['statuses']}"
        )
    ratio = durable["rate"] / noop["rate"]
    print(f"durable / no-op: {ratio:.2f}x (target >= 0.3x), with the processor running alongside")
    print(f"durable / no-op, processing paused: {alone['rate'] / noop['rate']:.2f}x")


if __name__ == "__main__":
    main()
