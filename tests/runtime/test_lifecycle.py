"""`rulekit run` as a process: refusing bad rules, hot reload (file changes, SIGHUP, invalid
files), graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from daemons import AUTOREPLY_RULES, SECRET, chat_started, wait_for, write_setup

from rulekit.runtime.dispatcher import DEFAULT_LEASE, STOP_GRACE
from rulekit.server import reloading
from rulekit.testing import FakeService, Response


def health(process) -> dict:
    return httpx.get(f"{process.url}/healthz", timeout=5).json()


def test_invalid_rules_refuse_the_start(tmp_path, processes):
    config = write_setup(
        tmp_path, "- name: broken\n  on: {channel: online-chat}\n  do: [nope: {}]\n"
    )
    process = processes(config)
    assert process.proc.wait(30) == 1, process.output()
    assert "unknown action" in process.output() or "nope" in process.output()


@pytest.mark.slow
def test_strict_refuses_unconfigured_services_and_the_default_reports_them(tmp_path, processes):
    config = write_setup(tmp_path)  # autoreply, but no Chatra API keys
    strict = processes(config, "--strict")
    assert strict.proc.wait(30) == 1
    assert "needs public_key and secret_key" in strict.output()
    lenient = processes(config).wait_ready()
    assert any("needs public_key" in warning for warning in health(lenient)["warnings"])
    assert "not configured" in lenient.output()


RELOADED = AUTOREPLY_RULES.replace("Hello", "Welcome back")
BROKEN = {
    "syntax error": AUTOREPLY_RULES + "  - [unclosed\n",
    "unknown key": AUTOREPLY_RULES.replace("  do:", "  when: x\n  do:"),
    "bad template": AUTOREPLY_RULES.replace("{{ client.display_name }}", "{{ client.nope( }}"),
}


@pytest.mark.slow
def test_invalid_files_keep_the_old_rules_and_a_fix_is_picked_up(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config).wait_ready()
    version = health(process)["rules_version"]
    rules = tmp_path / "rules.d" / "rules.yaml"
    for n, (kind, text) in enumerate(BROKEN.items(), start=1):
        rules.write_text(text)
        wait_for(
            lambda n=n: _metric(process, "rulekit_reload_errors_total") >= n,
            timeout=15,
        )
        state = health(process)
        assert not state["last_reload"]["ok"], kind
        assert state["rules_version"] == version, kind
        httpx.post(process.webhook_url, content=chat_started(n))
        wait_for(lambda n=n: len(chatra.sent) == n)
        assert chatra.sent[-1]["text"] == f"Hello Visitor {n}", kind  # the old rules
    rules.write_text(RELOADED)
    wait_for(lambda: health(process)["rules_version"] != version, timeout=15)
    assert health(process)["last_reload"]["ok"]
    httpx.post(process.webhook_url, content=chat_started(9))
    wait_for(lambda: len(chatra.sent) == 4)
    assert chatra.sent[-1]["text"] == "Welcome back Visitor 9"
    assert _metric(process, "rulekit_last_reload_success") == 1


def test_sighup_reloads(tmp_path, processes):
    config = write_setup(tmp_path)
    process = processes(config, "--no-watch").wait_ready()
    version = health(process)["rules_version"]
    (tmp_path / "rules.d" / "rules.yaml").write_text(RELOADED)
    time.sleep(0.5)
    assert health(process)["rules_version"] == version  # not watching
    process.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: health(process)["rules_version"] != version, timeout=15)


def test_sigterm_finishes_in_flight_work_and_exits_0(tmp_path, processes, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    process = processes(config).wait_ready()
    chatra.hang(1.5)
    httpx.post(process.webhook_url, content=chat_started(1))
    wait_for(lambda: chatra.sent)  # the call is in flight
    assert process.terminate() == 0
    assert "rulekit stopped" in process.output()
    conn = sqlite3.connect(tmp_path / "rulekit.sqlite3")
    try:
        rows = conn.execute("SELECT status, claimed_by FROM outbox").fetchall()
        assert rows == [("done", None)]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


HOOK_RULES = """\
- name: Tell the CRM
  on: {channel: online-chat, event: created}
  do:
    - webhook: {to: crm}
"""


@pytest.mark.slow
def test_sigterm_waits_for_a_call_longer_than_the_grace_and_it_is_not_made_again(
    tmp_path, processes
):
    # a target that answers slowly (within its 60 s timeout) got the call: cut off at the
    # shutdown's grace, its outcome was never recorded and the restarted daemon sent it again
    with FakeService() as target:
        target.script(Response(200, {}, delay=120))  # held until released
        extra = (
            "integrations:\n  webhooks:\n"
            f"    crm: {{url: '{target.base_url}/hook', secret: {SECRET}, timeout: 60}}\n"
        )
        config = write_setup(tmp_path, HOOK_RULES, extra=extra)
        process = processes(config).wait_ready()
        httpx.post(process.webhook_url, content=chat_started(1))
        wait_for(lambda: target.requests)  # the call is under way
        process.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.proc.wait(STOP_GRACE + 2)  # past the grace: the call is not cut off
        target.release()  # the target answers
        assert process.proc.wait(30) == 0
        restarted = processes(config).wait_ready()
        wait_for(lambda: [status for status, _ in _outbox(tmp_path)] == ["done"])
        assert restarted.terminate() == 0
        assert len(target.requests) == 1
        assert _outbox(tmp_path) == [("done", 1)]
        assert "waiting for 1 calls under way to end" in process.output()


@pytest.mark.slow
def test_sigterm_records_a_finished_call_once_the_store_is_back(tmp_path, processes):
    # stopping, the outcome of a call made was given up at the store's first refusal (here:
    # another process holding the SQLite file's write lock past the busy timeout), and the
    # restarted daemon made the call again
    with FakeService() as target:
        target.script(Response(200, {}, delay=120))  # held until released
        extra = (
            "integrations:\n  webhooks:\n"
            f"    crm: {{url: '{target.base_url}/hook', secret: {SECRET}, timeout: 60}}\n"
        )
        config = write_setup(tmp_path, HOOK_RULES, extra=extra)
        config.write_text(
            config.read_text().replace("rulekit.sqlite3", "rulekit.sqlite3?busy_timeout=0.2")
        )
        process = processes(config).wait_ready()
        httpx.post(process.webhook_url, content=chat_started(1))
        wait_for(lambda: target.requests)  # the call is under way
        process.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "calls under way to end" in process.output())
        blocker = sqlite3.connect(tmp_path / "rulekit.sqlite3", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # the store refuses writes
            target.release()  # the call ends: its outcome cannot be recorded yet
            wait_for(
                lambda: "cannot record job" in process.output() or process.proc.poll() is not None
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert process.proc.wait(30) == 0
        restarted = processes(config).wait_ready()
        done = lambda: [status for status, _ in _outbox(tmp_path)] == ["done"]  # noqa: E731
        wait_for(done, timeout=DEFAULT_LEASE + 15)
        assert restarted.terminate() == 0
        assert len(target.requests) == 1


def test_a_reload_does_not_cut_off_a_call_under_way(tmp_path, serve, monkeypatch):
    # the replaced snapshot's clients were closed after a fixed grace, under a call still
    # going through them: the target had the call, rulekit saw a read error and sent it again
    monkeypatch.setattr(reloading, "OLD_SNAPSHOT_GRACE", 0.0)
    with FakeService() as target:
        target.script(Response(200, {}, delay=120))  # held until released
        extra = (
            "integrations:\n  webhooks:\n"
            f"    crm: {{url: '{target.base_url}/hook', secret: {SECRET}, timeout: 60}}\n"
        )
        config = write_setup(tmp_path, HOOK_RULES, extra=extra)
        server = serve(config)
        httpx.post(server.webhook_url, content=chat_started(1))
        wait_for(lambda: target.requests)  # the call is under way
        (tmp_path / "rules.d" / "rules.yaml").write_text(HOOK_RULES + "# edited\n")
        assert server.call(server.daemon.reload("test")) is True
        time.sleep(1)  # the replaced snapshot's grace (0 s here) is over
        target.release()
        wait_for(lambda: [status for status, _ in _outbox(tmp_path)] == ["done"])
        assert len(target.requests) == 1
        assert _outbox(tmp_path) == [("done", 1)]


def _outbox(folder) -> list:
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        return conn.execute("SELECT status, attempts FROM outbox").fetchall()
    finally:
        conn.close()


def test_a_refused_reload_is_published_to_the_console_feed(tmp_path, serve):
    config = write_setup(tmp_path)
    server = serve(config)
    subscription = server.call(_subscribe(server))
    (tmp_path / "rules.d" / "rules.yaml").write_text(BROKEN["unknown key"])
    assert server.call(server.daemon.reload("test")) is False
    message = server.call(_next(subscription))
    assert message["type"] == "reload"
    assert message["ok"] is False
    assert any("when" in error for error in message["errors"])


async def _subscribe(server):
    return server.daemon.feed.subscribe()


async def _next(subscription):
    async with asyncio.timeout(10):
        return await subscription.get()


def _metric(process, name: str) -> float:
    for line in httpx.get(f"{process.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    pytest.fail(f"no metric {name}")


def test_reloaded_rules_leave_the_collectors_work_at_once(tmp_path, serve):
    server = serve(write_setup(tmp_path))
    server.daemon.freezes_heap = True  # as `rulekit run` sets it
    try:
        (tmp_path / "rules.d" / "rules.yaml").write_text(AUTOREPLY_RULES + "\n# edited\n")
        assert server.call(server.daemon.reload("test")) is True
        engine = server.daemon.snapshot.engine
        # frozen objects are in no generation the collector scans (gc.get_objects lists those)
        assert not any(tracked is engine for tracked in gc.get_objects())
    finally:
        server.daemon.freezes_heap = False
        gc.unfreeze()


@pytest.mark.slow
def test_a_store_open_to_every_user_is_warned_of_at_start(tmp_path, processes):
    """A store an older rulekit made under the usual umask (0644) keeps its mode (the admin's
    to change) and is warned of; a store the daemon creates is private and warned of never."""
    config = write_setup(tmp_path)  # its webhook secret is written in it
    config.chmod(0o600)
    store = tmp_path / "rulekit.sqlite3"
    fresh = processes(config).wait_ready()
    assert store.stat().st_mode & 0o777 == 0o600
    fresh.terminate()
    assert "open to every user" not in fresh.output()
    store.chmod(0o644)
    process = processes(config).wait_ready()
    wait_for(lambda: "open to every user" in process.output())
    process.terminate()
    [line] = [line for line in process.output().splitlines() if "open to every user" in line]
    assert "WARNING rulekit.daemon" in line and "mode 0644" in line
    assert store.stat().st_mode & 0o777 == 0o644
    assert "holds 1 secret(s) written in it" not in process.output()  # a private config


def test_a_config_every_user_can_read_holding_secrets_is_warned_of_at_start(tmp_path, processes):
    config = write_setup(tmp_path)  # its webhook secret is written in it
    config.chmod(0o644)
    process = processes(config).wait_ready()
    wait_for(lambda: "written in it" in process.output())
    process.terminate()
    [line] = [line for line in process.output().splitlines() if "written in it" in line]
    assert "WARNING rulekit.daemon" in line and f"{config} is readable by every user" in line
    assert SECRET not in process.output()


@pytest.mark.slow
def test_a_short_webhook_secret_is_warned_of_at_start(tmp_path, processes):
    """Wrong webhook secrets are answered as fast as they come (404): a short one can be found
    by trying. The daemon starts all the same, and says which channel's secret is short."""
    config = write_setup(tmp_path)
    config.write_text(config.read_text().replace(SECRET, "s3cret-1"))
    config.chmod(0o600)
    process = processes(config).wait_ready()
    wait_for(lambda: "shorter than 16 characters" in process.output())
    process.terminate()
    [line] = [line for line in process.output().splitlines() if "shorter than 16" in line]
    assert "WARNING rulekit.daemon" in line and "channel(s) 'online-chat'" in line
    assert "s3cret-1" not in process.output()


def test_a_burst_of_reload_requests_is_one_reload_after_the_one_under_way(tmp_path, serve):
    """A burst of SIGHUPs (a script, logrotate's hook per file) each queued a whole reload."""
    server = serve(write_setup(tmp_path))
    daemon = server.daemon

    def reloads() -> float:
        return daemon.metrics.registry.get_sample_value("rulekit_reloads_total") or 0.0

    before = reloads()
    (tmp_path / "rules.d" / "rules.yaml").write_text(RELOADED)

    async def burst() -> list[bool]:
        return await asyncio.gather(*(daemon.reload("burst") for _ in range(50)))

    assert server.call(burst(), timeout=120) == [True] * 50
    assert reloads() - before == 2  # the first, and one for the rest
    assert daemon.snapshot.engine.rules[0].steps  # the edited rules are the ones active
    assert "Welcome back" in str(daemon.snapshot.files)


def test_a_file_emptied_by_a_save_under_way_keeps_the_old_set(tmp_path, serve):
    """``cmd > rules.yaml`` empties the file at once and writes it when ``cmd`` prints: a reload
    in between took the empty file as valid, dropping its rules (or every channel, for the
    config) until the save ended."""
    config = write_setup(tmp_path)
    server = serve(config)
    daemon = server.daemon
    version = daemon.snapshot.version
    rules = tmp_path / "rules.d" / "rules.yaml"
    for emptied, text in ((rules, AUTOREPLY_RULES), (config, config.read_text())):
        emptied.write_text("")
        assert server.call(daemon.reload("test")) is False
        assert daemon.snapshot.version == version
        assert "online-chat" in daemon.snapshot.config.channels
        (error,) = daemon.last_reload["errors"]
        assert error.startswith(f"{emptied.name}: the file is empty now") or (
            f"/{emptied.name}: the file is empty now" in error
        )
        emptied.write_text(text)
    rules.write_text("[]\n")  # what an admin writes for no rules
    assert server.call(daemon.reload("test")) is True
    assert daemon.snapshot.engine.rules == []


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc to see the load")
def test_a_sighup_while_the_daemon_starts_is_held_and_reloads_once_it_listens(tmp_path, processes):
    """Until the daemon listened for SIGHUP (after importing and loading its rules: seconds
    with a large set), a SIGHUP took its default action and ended it (``systemctl reload``
    right after a start)."""
    rules = "".join(
        f"- name: r{n}\n  on: {{channel: online-chat, event: created}}\n"
        f"  if: \"'x{n}' in message.text\"\n  do: [{{play_sound: {{sound: bell}}}}]\n"
        for n in range(500)
    )
    process = processes(write_setup(tmp_path, rules))
    pid = process.proc.pid

    def loading() -> bool:  # its rules are validated in a child process: it is loading them
        with contextlib.suppress(OSError):
            return bool(Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        return False

    wait_for(loading, timeout=30, interval=0.002)
    assert "rulekit started" not in process.output()
    process.proc.send_signal(signal.SIGHUP)
    process.wait_ready()
    wait_for(lambda: "reason=SIGHUP" in process.output(), timeout=30)
