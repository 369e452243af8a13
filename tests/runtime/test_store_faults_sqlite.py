"""A ``rulekit run`` daemon whose SQLite file misbehaves: another process holding its write
lock past the busy timeout, the disk under it full. Webhooks are answered 503 (never 200)
meanwhile, /healthz says why, nothing acknowledged is lost, and the daemon takes up its work
by itself once the fault is gone."""

from __future__ import annotations

import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemons import Process, chat_started, wait_for, write_setup

JSON = {"Content-Type": "application/json"}


def post(daemon: Any, n: int) -> httpx.Response:
    return httpx.post(daemon.webhook_url, content=chat_started(n), headers=JSON, timeout=60)


def replied(chatra) -> Counter:
    return Counter(body["clientId"] for body in chatra.sent)


def health(daemon: Any) -> tuple[int, dict]:
    answer = httpx.get(f"{daemon.url}/healthz", timeout=10)
    return answer.status_code, answer.json()


def on_file(tmp_path: Path, processes, chatra, database: Path, options: str = "") -> Process:
    config = write_setup(tmp_path, chatra=chatra)
    config.write_text(
        config.read_text().replace("sqlite:///rulekit.sqlite3", f"sqlite:///{database}{options}")
    )
    return processes(config).wait_ready()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system of its own of 2 MiB (a tmpfs), unmounted after."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_another_process_holding_the_write_lock_answers_503_then_recovers(
    tmp_path, processes, chatra
):
    database = tmp_path / "rulekit.sqlite3"
    daemon = on_file(tmp_path, processes, chatra, database, "?busy_timeout=0.5")
    assert post(daemon, 0).status_code == 200
    wait_for(lambda: replied(chatra)["client00000000"] == 1, 30)
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # held past the busy timeout
        answer = post(daemon, 1)
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"]
        status, body = health(daemon)
        assert status == 503 and "busy timeout" in body["store"]
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait_for(lambda: post(daemon, 1).status_code == 200, 30, 0.2)
    wait_for(lambda: replied(chatra)["client00000001"] == 1, 30)
    wait_for(lambda: health(daemon)[0] == 200, 30)
    assert replied(chatra) == {"client00000000": 1, "client00000001": 1}


@pytest.mark.slow
def test_a_full_disk_answers_503_and_the_daemon_recovers_when_space_returns(
    tmp_path, processes, chatra, small_disk
):
    daemon = on_file(tmp_path, processes, chatra, small_disk / "rulekit.sqlite3")
    assert post(daemon, 0).status_code == 200
    wait_for(lambda: replied(chatra)["client00000000"] == 1, 30)
    with (small_disk / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass  # the disk is full
    answers = [post(daemon, n).status_code for n in range(1, 6)]
    assert answers == [503] * 5
    status, body = health(daemon)
    assert status == 503 and "disk full" in body["store"]
    (small_disk / "filler").unlink()
    for n in range(1, 6):
        wait_for(lambda n=n: post(daemon, n).status_code == 200, 30, 0.2)
    wait_for(lambda: len(replied(chatra)) == 6, 30)
    assert set(replied(chatra).values()) == {1}
    wait_for(lambda: health(daemon)[0] == 200, 30)


def test_healthz_says_the_disk_is_full_while_transactions_that_only_read_commit(
    tmp_path, serve, chatra, small_disk
):
    # a transaction that only reads commits on a full disk too: the idle polls made one every
    # second, and /healthz said "ok" while every webhook was answered 503
    config = write_setup(tmp_path, chatra=chatra)
    database = small_disk / "rulekit.sqlite3"
    config.write_text(
        config.read_text().replace("sqlite:///rulekit.sqlite3", f"sqlite:///{database}")
    )
    server = serve(config)
    assert post(server, 0).status_code == 200
    wait_for(lambda: replied(chatra)["client00000000"] == 1, 30)
    with (small_disk / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass  # the disk is full
    assert post(server, 1).status_code == 503
    commits = server.daemon.commit.commits
    wait_for(lambda: server.daemon.commit.commits >= commits + 2, 30)  # the idle polls
    status, body = health(server)
    assert status == 503 and "disk full" in body["store"]
    (small_disk / "filler").unlink()
    wait_for(lambda: post(server, 1).status_code == 200, 30, 0.2)
    assert health(server)[0] == 200
    wait_for(lambda: replied(chatra)["client00000001"] == 1, 30)
