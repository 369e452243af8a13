"""Hostile files against a running daemon: an alias bomb written over the rules or the config is
refused (the old rules stay), refuses the start, and never keeps a later, fixed file from being
picked up; a reload that runs over its budget is abandoned and the next one goes through."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading

import httpx
import pytest
from daemons import AUTOREPLY_RULES, chat_started, wait_for, write_setup

import rulekit.server.reloading as reloading_module

BOMB_LINES = [
    '  x: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
    *(
        f"  {key}: &{key} [" + ",".join([f"*{prev}"] * 9) + "]"
        for key, prev in zip("bcdefgh", "abcdefg", strict=True)
    ),
]
BOMB_RULES = AUTOREPLY_RULES.replace("  on:", "\n".join(BOMB_LINES) + "\n  on:")
RELOADED = AUTOREPLY_RULES.replace("Hello", "Welcome back")


def health(process) -> dict:
    return httpx.get(f"{process.url}/healthz", timeout=5).json()


def reload_errors(process) -> float:
    for line in httpx.get(f"{process.url}/metrics", timeout=5).text.splitlines():
        if line.startswith("rulekit_reload_errors_total "):
            return float(line.split()[1])
    return 0.0


def test_a_bomb_refuses_the_start_with_file_and_line(tmp_path, processes):
    config = write_setup(tmp_path, BOMB_RULES)
    process = processes(config)
    assert process.proc.wait(120) == 1, process.output()
    assert re.search(r"rules\.yaml:\d+: invalid YAML: aliases repeat too much", process.output())
    assert "Traceback" not in process.output()


@pytest.mark.slow
def test_a_bomb_on_reload_is_refused_and_the_fixed_file_becomes_active(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config).wait_ready()
    version = health(process)["rules_version"]
    rules = tmp_path / "rules.d" / "rules.yaml"
    good_config = config.read_text()

    rules.write_text(BOMB_RULES)
    wait_for(lambda: reload_errors(process) >= 1, timeout=60)
    state = health(process)
    assert state["rules_version"] == version
    [error] = state["last_reload"]["errors"]
    assert re.search(r"rules\.yaml:\d+: invalid YAML: aliases repeat too much", error)

    config.write_text("\n".join(line.strip() for line in BOMB_LINES) + "\n" + good_config)
    wait_for(lambda: reload_errors(process) >= 2, timeout=60)
    assert any("rulekit.yaml:" in e for e in health(process)["last_reload"]["errors"])

    config.write_text(good_config)
    rules.write_text(RELOADED)
    wait_for(lambda: health(process)["rules_version"] != version, timeout=60)
    assert health(process)["last_reload"]["ok"]
    httpx.post(process.webhook_url, content=chat_started(1))
    wait_for(lambda: len(chatra.sent) == 1)
    assert chatra.sent[0]["text"] == "Welcome back Visitor 1"


def test_a_reload_over_budget_is_abandoned_and_never_blocks_the_next(
    tmp_path, serve, chatra, monkeypatch
):
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config, reload_budget=0.5)
    real_load = reloading_module.load_known
    release = threading.Event()
    calls: list[str] = []

    def load(*args):
        calls.append("load")
        if len(calls) == 1:  # the first reload hangs (as a load stuck on some file would)
            release.wait(120)
        snapshot = real_load(*args)
        calls.append("done")
        return snapshot

    monkeypatch.setattr(reloading_module, "load_known", load)
    try:
        (tmp_path / "rules.d" / "rules.yaml").write_text(RELOADED)
        assert server.call(server.daemon.reload("test")) is False
        [error] = server.daemon.last_reload["errors"]
        assert "took over 0.5 s and was abandoned" in error
        # the lock was released: the next reload runs, and the fixed rules become active (its
        # budget made generous: a real load must not race a half-second clock on a busy machine)
        server.daemon.reload_budget = 60.0
        assert server.call(server.daemon.reload("test")) is True
        active = server.daemon.snapshot
        httpx.post(server.webhook_url, content=chat_started(1))
        wait_for(lambda: len(chatra.sent) == 1)
        assert chatra.sent[0]["text"] == "Welcome back Visitor 1"
    finally:
        release.set()
    # the abandoned load finishing late changes nothing
    wait_for(lambda: calls.count("done") == 2)
    server.call(asyncio.sleep(0.1))  # its result, were it used, would be applied on the loop
    assert server.daemon.snapshot is active
    assert server.daemon.last_reload["ok"]


def test_a_reload_that_ends_while_the_daemon_stops_swaps_nothing_in(
    tmp_path, serve, chatra, monkeypatch
):
    """A reload still loading when the daemon began to stop swapped its set in afterwards:
    its fetchers started again after the fetchers were stopped, and its network clients were
    never closed. Once the daemon stops, a late reload is dropped."""
    config = write_setup(tmp_path, chatra=chatra, fetch_client=True)
    server = serve(config)
    assert server.daemon.fetchers is not None
    wait_for(lambda: server.daemon.fetchers.channels == ["online-chat"])
    before = server.daemon.snapshot
    real_load = reloading_module.load_known
    release = threading.Event()
    calls: list[str] = []

    def load(*args):
        calls.append("load")
        release.wait(120)  # a load taking its time (a slow disk, many rules)
        snapshot = real_load(*args)
        calls.append("done")
        return snapshot

    monkeypatch.setattr(reloading_module, "load_known", load)
    (tmp_path / "rules.d" / "rules.yaml").write_text(RELOADED)
    assert server.loop is not None
    reloaded = asyncio.run_coroutine_threadsafe(server.daemon.reload("test"), server.loop)
    try:
        wait_for(lambda: calls == ["load"])
        server.call(server.daemon.stop())
        assert server.daemon.fetchers.channels == []
    finally:
        release.set()
    assert reloaded.result(60) is False
    assert calls == ["load", "done"]
    assert server.daemon.snapshot is before
    assert server.daemon.fetchers.channels == []
    # and no reload begins once it stopped
    assert server.call(server.daemon.reload("test")) is False
    assert calls == ["load", "done"]


def test_loads_abandoned_over_budget_are_not_started_without_end(
    tmp_path, serve, chatra, monkeypatch
):
    """An abandoned load goes on in its thread: a reload on each save of rules that load in
    longer than the budget started one more each time, each holding a whole set's memory.
    Two may run at once; a reload beyond them is refused until one ends."""
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config, reload_budget=0.5)
    real_load = reloading_module.load_known
    release = threading.Event()
    calls: list[str] = []

    def load(*args):
        calls.append("load")
        if len(calls) <= 2:  # the first two hang (a load far over its budget)
            release.wait(120)
        snapshot = real_load(*args)
        calls.append("done")
        return snapshot

    monkeypatch.setattr(reloading_module, "load_known", load)
    try:
        (tmp_path / "rules.d" / "rules.yaml").write_text(RELOADED)
        assert server.call(server.daemon.reload("test")) is False
        assert server.call(server.daemon.reload("test")) is False
        assert server.call(server.daemon.reload("test")) is False
        [error] = server.daemon.last_reload["errors"]
        assert error == (
            "2 earlier loads, abandoned over the reload budget, are still running: reload "
            "again once one of them has ended"
        )
        assert calls == ["load", "load"]  # the third was not started
    finally:
        release.set()
    wait_for(lambda: calls.count("done") == 2)
    server.daemon.reload_budget = 60.0
    # once they have ended (their threads finish just after), a reload goes through
    wait_for(lambda: server.call(server.daemon.reload("test")))
    httpx.post(server.webhook_url, content=chat_started(1))
    wait_for(lambda: len(chatra.sent) == 1)
    assert chatra.sent[0]["text"] == "Welcome back Visitor 1"


def test_a_config_replaced_by_a_fifo_is_refused_without_a_read_left_waiting(tmp_path, serve):
    """A refused reload looks for the secrets of the new config that did not load, to hide them
    in its errors: that second read of the config was unbounded, so a FIFO held the reload lock
    for the whole budget and left its thread reading for good (a huge file, likewise)."""
    import os

    config = write_setup(tmp_path)
    server = serve(config)
    daemon = server.daemon
    daemon.reload_budget = 5.0
    saved = config.read_text()
    config.unlink()
    os.mkfifo(config)
    try:
        assert server.call(daemon.reload("test")) is False
        (error,) = daemon.last_reload["errors"]
        assert "not a regular file" in error

        def reading() -> list[threading.Thread]:
            return [t for t in threading.enumerate() if "new config's secrets" in t.name]

        wait_for(lambda: not reading(), timeout=daemon.reload_budget * 2)
    finally:
        with contextlib.suppress(OSError):  # a reader still waiting: let it end
            os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))
        config.unlink()
        config.write_text(saved)
    assert server.call(daemon.reload("test")) is True
