"""The fork server the helpers start from dies (killed, out of memory) while processes are being
started: each start is made once, by one new server, which, like the resource tracker, holds
none of the daemon's environment; and the daemon's environment is never changed meanwhile."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from rulekit.runtime.forkserver import fork_server

SECRET_NAME = "RULEKIT_TEST_FORK_SECRET"
SECRET = "fork-secret-0123456789"


def report(connection: Connection, number: int) -> None:
    """A helper process: says which it is and which server forked it."""
    connection.send((number, os.getppid()))
    connection.close()


def _server_pid() -> int:
    """The fork server's pid (it is the parent of the processes it forks)."""
    return _start(-1)[1]


def _trackers() -> list[int]:
    """The resource trackers this process started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"multiprocessing.resource_tracker" in command:
            found.append(int(entry.name))
    return found


def _environment(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SECRET_NAME, SECRET)
    yield


def _start(number: int) -> tuple[int, int]:
    context = fork_server()
    ours, theirs = context.Pipe(duplex=False)
    process = context.Process(target=report, args=(theirs, number), daemon=True)
    process.start()
    theirs.close()
    try:
        said = ours.recv()
        with pytest.raises(EOFError):  # said once
            ours.recv()
    finally:
        ours.close()
    process.join(10)
    return said


@pytest.mark.slow  # (the default run has the shorter test below)
def test_a_fork_server_killed_mid_request_is_replaced_once_and_no_start_is_lost(secret) -> None:
    killed = _server_pid()
    os.kill(killed, signal.SIGSTOP)  # it takes the requests and never answers them
    watched: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # the daemon's environment, read while the server is replaced
        while not stop.is_set():
            if os.environ.get(SECRET_NAME) != SECRET:
                watched.append("changed")
            time.sleep(0.0001)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with ThreadPoolExecutor(6) as pool:
            starts = [pool.submit(_start, number) for number in range(6)]
            time.sleep(0.5)  # (the requests reach the stopped server, which holds them)
            os.kill(killed, signal.SIGKILL)
            said = [start.result(timeout=60) for start in starts]
    finally:
        stop.set()
        watcher.join(10)
        with_suppressed_kill(killed)
    assert sorted(number for number, _ in said) == list(range(6))
    servers = {server for _, server in said}
    assert len(servers) == 1 and killed not in servers  # one new server forked them all
    (server,) = servers
    assert _server_pid() == server
    assert watched == []
    for pid in [server, *_trackers()]:
        environment = _environment(pid)
        assert not any(SECRET in entry for entry in environment)
        assert any(entry.startswith("PATH=") for entry in environment)


def test_a_start_under_way_when_the_fork_server_dies_is_made_once_by_a_new_one(secret) -> None:
    killed = _server_pid()
    os.kill(killed, signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            start = pool.submit(_start, 7)
            time.sleep(0.3)  # (the request reaches the stopped server, which holds it)
            os.kill(killed, signal.SIGKILL)
            number, server = start.result(timeout=60)
    finally:
        with_suppressed_kill(killed)
    assert number == 7 and server != killed
    assert not any(SECRET in entry for entry in _environment(server))


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except (FileNotFoundError, IndexError):
        return True


def with_suppressed_kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
