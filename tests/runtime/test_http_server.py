"""The daemon's HTTP server facing slow or hostile clients, and its shutdown with the console
open: real ``rulekit run`` processes on loopback.

* thousands of connections sending their headers a byte at a time never lock out a webhook,
  and are closed once the header deadline has passed; the daemon never runs out of file
  descriptors (its connection limit stays below them);
* a body that stops arriving is cut off at the body deadline;
* a request line and headers over ``server.max_header_bytes`` (one long header, many, a long
  URL; alone or pipelined behind a webhook) are answered 431 on every route, and the daemon
  goes on answering;
* SIGTERM with a console stream open: the stream ends and the process exits 0 well before the
  server's graceful-shutdown timeout.

Bounds are derived from the configured deadlines, never from how fast the machine is.
"""

from __future__ import annotations

import errno
import hashlib
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemons import SECRET, Process, chat_started, wait_for, write_setup

from rulekit.config import ServerSettings
from rulekit.server.http import FD_RESERVE, SHUTDOWN_GRACE

HEADER_TIMEOUT = 4.0
BODY_TIMEOUT = 3.0
DAEMON_FILES = 1024
"""The daemon's open-files limit (soft and hard): below the number of slow connections."""
SLOW = 1500
ADMIN_TOKEN = "admin-token-for-the-server-tests"
HEAD_LIMIT = ServerSettings().max_header_bytes


class LimitedProcess(Process):
    """``rulekit run`` whose open-files limit is :data:`DAEMON_FILES`."""

    def _start(self, config: Path, args: tuple[str, ...], output: Any, env: dict) -> Any:
        def limit_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (DAEMON_FILES, DAEMON_FILES))

        return subprocess.Popen(
            [
                *(sys.executable, "-m", "rulekit.cli.main", "run"),
                *("--config", str(config), *args),  # args name the port
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit_files,
        )


def start(folder: Path) -> LimitedProcess:
    digest = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    config = write_setup(
        folder,
        extra=(
            f"server: {{header_timeout: {HEADER_TIMEOUT}, body_timeout: {BODY_TIMEOUT}, "
            "keep_alive_timeout: 1}\n"
            f"console: {{admin_token_sha256: {digest}}}\n"
        ),
    )
    return LimitedProcess(config).wait_ready()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedProcess]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = SLOW + 256
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open-files limit ({hard}) is too low for {SLOW} test connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    process = start(tmp_path_factory.mktemp("server"))
    try:
        yield process
    finally:
        if process.proc.poll() is None:
            process.terminate()


class Slowloris:
    """``count`` connections that send a webhook's request line, then one byte of a header
    at a time, forever; notes when the server closes each one."""

    def __init__(self, port: int, count: int) -> None:
        self.sockets: list[socket.socket] = []
        self.closed: dict[int, float] = {}
        self._stop = threading.Event()
        head = f"POST /webhooks/online-chat/{SECRET} HTTP/1.1\r\nHost: x\r\n".encode()
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            self.sockets.append(sock)
        self._pending = {i: head for i in range(count)}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        trickle = b"X-Slow: yes\r\n"
        step = 0
        while not self._stop.is_set():
            for i, sock in enumerate(self.sockets):
                if i in self.closed:
                    continue
                try:
                    try:
                        if sock.recv(4096) == b"":  # the server closed it
                            self.closed[i] = time.monotonic()
                            continue
                    except (BlockingIOError, InterruptedError):
                        pass  # open, nothing to read
                    data = self._pending.pop(i, None) or trickle[step % len(trickle) :][:1]
                    sock.send(data)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ENOTCONN, errno.EAGAIN):
                        continue  # not connected yet (the server's backlog is full)
                    self.closed[i] = time.monotonic()
            step += 1
            self._stop.wait(0.2)

    def open(self) -> int:
        return len(self.sockets) - len(self.closed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.sockets:
            sock.close()


@pytest.mark.slow
def test_slow_connections_never_lock_out_a_webhook(daemon: LimitedProcess) -> None:
    slowloris = Slowloris(daemon.port, SLOW)
    try:
        # the slow connections are in (those beyond the limit took the place of older ones)
        response = httpx.post(daemon.webhook_url, content=chat_started(1), timeout=HEADER_TIMEOUT)
        assert response.status_code == 200, response.text
        assert slowloris.open() > 0  # some are still waiting for their header deadline
        # every slow connection is closed once the header deadline has passed
        wait_for(lambda: slowloris.open() == 0, timeout=3 * HEADER_TIMEOUT)
    finally:
        slowloris.close()
    assert httpx.get(f"{daemon.url}/healthz", timeout=HEADER_TIMEOUT).status_code == 200
    output = daemon.output()
    assert "Too many open files" not in output and "out of system resource" not in output
    # the connection limit was set below the daemon's open-files limit
    assert f"at most {DAEMON_FILES - FD_RESERVE} connections" in output


def test_a_body_that_stops_arriving_is_cut_off_at_the_body_deadline(
    daemon: LimitedProcess,
) -> None:
    with socket.create_connection(("127.0.0.1", daemon.port)) as sock:
        sock.sendall(
            f"POST /webhooks/online-chat/{SECRET} HTTP/1.1\r\nHost: x\r\n"
            'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"a":'.encode()
        )
        sock.settimeout(3 * BODY_TIMEOUT)
        received = b""
        while chunk := sock.recv(4096):  # until the server closes the connection
            received += chunk
    assert not received.startswith(b"HTTP/1.1 200")


def exchange(port: int, *writes: bytes) -> bytes:
    """Send ``writes`` one by one on a new connection; everything answered until it closes."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(3 * HEADER_TIMEOUT)
        try:
            for data in writes:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before the rest was sent: read the answer
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def pieces(data: bytes, size: int = 4096) -> list[bytes]:
    """``data`` in writes of ``size`` bytes, as a slow or hostile client sends a head."""
    return [data[i : i + size] for i in range(0, len(data), size)]


OVERSIZED_HEADS = {
    "one long header": lambda path: f"{path} HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * 4 * HEAD_LIMIT}",
    "many headers": lambda path: (
        f"{path} HTTP/1.1\r\nHost: x\r\n"
        + "".join(f"X-{i}: {i}\r\n" for i in range(HEAD_LIMIT // 4))
    ),
    "a long URL": lambda path: f"{path}?{'q=1&' * HEAD_LIMIT} HTTP/1.1\r\nHost: x\r\n",
}
ROUTES = [f"POST /webhooks/online-chat/{SECRET}", "GET /healthz", "POST /console/login"]


@pytest.mark.parametrize("shape", sorted(OVERSIZED_HEADS))
def test_a_request_head_over_the_budget_gets_431_on_every_route(
    daemon: LimitedProcess, shape: str
) -> None:
    for route in ROUTES:
        head = OVERSIZED_HEADS[shape](route).encode()
        answer = exchange(daemon.port, *pieces(head + b"Content-Length: 2\r\n\r\n{}"))
        assert answer.startswith(b"HTTP/1.1 431 "), (route, answer[:200])
        assert b"over %d bytes" % HEAD_LIMIT in answer
    # a head within the budget is served as usual, and so is the next webhook
    within = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * (HEAD_LIMIT - 200)}\r\n"
    answer = exchange(daemon.port, *pieces(within.encode() + b"Connection: close\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    response = httpx.post(daemon.webhook_url, content=chat_started(2), timeout=HEADER_TIMEOUT)
    assert response.status_code == 200, response.text


def test_a_pipelined_head_over_the_budget_gets_431_after_the_answer_before_it(
    daemon: LimitedProcess,
) -> None:
    body = chat_started(3)
    webhook = (
        f"POST /webhooks/online-chat/{SECRET} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    oversized = OVERSIZED_HEADS["one long header"]("GET /healthz").encode()
    answer = exchange(daemon.port, webhook + oversized[:60000], *pieces(oversized[60000:]))
    first, _, rest = answer.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200 "), answer[:300]
    assert b'"status":"accepted"' in rest and b"HTTP/1.1 431 " in rest, answer[:600]


def test_sigterm_ends_the_live_stream_and_the_process_at_once(tmp_path: Path) -> None:
    daemon = start(tmp_path)
    try:
        signed_in = httpx.post(f"{daemon.url}/console/login", data={"token": ADMIN_TOKEN})
        assert signed_in.status_code == 303
        # a read timeout below the graceful-shutdown timeout: a stream left open until uvicorn
        # gives up on it fails the test
        timeout = httpx.Timeout(5, read=SHUTDOWN_GRACE / 2)
        with (
            httpx.Client(base_url=daemon.url, cookies=signed_in.cookies, timeout=timeout) as client,
            client.stream("GET", "/console/stream") as stream,
        ):
            lines = stream.iter_lines()
            assert next(lines) == "retry: 2000"
            daemon.proc.send_signal(signal.SIGTERM)
            rest = list(lines)  # ends when the server closes the stream
        assert all(not line.startswith("data:") or "reload" in line for line in rest)
        assert daemon.proc.wait(SHUTDOWN_GRACE / 2) == 0
        assert "graceful shutdown exceeded" not in daemon.output()
    finally:
        if daemon.proc.poll() is None:
            daemon.kill()


def test_the_documented_limits_load(tmp_path: Path) -> None:
    from scaffold import REPO

    from rulekit.config import load_config
    from rulekit.plugins import load_plugins

    docs = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    block = docs.split("```yaml\nserver:\n  max_connections:")[1].split("```")[0]
    config = tmp_path / "rulekit.yaml"
    config.write_text("server:\n  max_connections:" + block)
    server = load_config(config, load_plugins(entry_points=False), {}).raw.server
    assert (server.max_connections, server.header_timeout) == (1000, 10)
    assert server.max_header_bytes == 65536
    assert (server.body_timeout, server.keep_alive_timeout) == (30, 5)
    assert server.send_timeout == ServerSettings().send_timeout
    assert server.max_body_bytes_in_flight == ServerSettings().max_body_bytes_in_flight
