"""A provider's ``parse`` runs with no store transaction open and within a budget
(:data:`~rulekit.runtime.parsing.PARSE_BUDGET`): a plugin whose parse hangs or spins on one
body holds up nothing but that body. The other webhooks are acknowledged at once (the ack
never waits for plugin code) and processed, the body is set aside with a reason naming the
budget (retryable with ``rulekit requeue``), later items of its conversation go on as after
any parse that fails, and ``/healthz`` says the daemon is well."""

from __future__ import annotations

import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from daemons import install_plugin, wait_for, write_setup

from rulekit.channels.hookrunner import HOOKS_IN_FLIGHT
from rulekit.cli.main import cli
from rulekit.runtime import parsing

SECRET = "slow-secret-0123456789"

PLUGIN = """\
import threading
from datetime import UTC, datetime

from rulekit import hookimpl
from rulekit.channels.base import ChannelTimer
from rulekit.channels.webhook import WebhookProvider

RELEASE = threading.Event()
ENTERED = []


class Stalling(WebhookProvider):
    name = "stalling"
    description = "a webhook channel whose parse hangs or spins on some bodies"

    def parse(self, body, state):
        if b"hang" in body:
            ENTERED.append("hang")
            RELEASE.wait(60)  # as a call to a service that never answers
        if b"spin" in body:
            ENTERED.append("spin")
            while not RELEASE.is_set():  # a plugin's endless loop on a hostile body
                pass
        if b"cooldown" in body:  # a write the state of a parse does not take
            state.set_cooldown("Greet", "slow:c9", datetime.now(UTC))
        if b"state" in body:  # given up, it finds the state it was handed closed
            RELEASE.wait(60)
            try:
                state.get_conversation("slow", "c1")
            except Exception as exc:
                ENTERED.append(type(exc).__name__)
        return super().parse(body, state)

    def channel_timers(self, event):
        if event.message.text == "timers":
            ENTERED.append("channel_timers")
            RELEASE.wait(60)
        if event.message.text == "soon":  # due at once: its timer_due hangs
            return [ChannelTimer("idle", event.conversation.id, datetime.now(UTC))]
        return []

    def timer_due(self, timer, state):
        ENTERED.append("timer_due")
        RELEASE.wait(60)
        return []


@hookimpl
def rulekit_register_providers(register):
    register.add(Stalling)
"""

RULES = "- name: Greet\n  on: {channel: slow, event: created}\n  do:\n    - tag: {add: [seen]}\n"


@pytest.fixture
def stalling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    install_plugin(tmp_path, monkeypatch, "rulekit_stalling", PLUGIN)
    import rulekit_stalling  # type: ignore[import-not-found]

    monkeypatch.setattr(parsing, "PARSE_BUDGET", 1.0)
    yield rulekit_stalling
    rulekit_stalling.RELEASE.set()  # the stuck parses return before the daemon stops
    sys.modules.pop("rulekit_stalling", None)


def _event(n: int, conversation: str, text: str = "hello") -> bytes:
    return json.dumps(
        {
            "id": f"e{n}",
            "event": "created",
            "conversation": {"id": conversation},
            "message": {"id": f"m{n}", "text": text},
        }
    ).encode()


def _inbox(folder: Path) -> list[tuple[int, str, str | None]]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as db:
        return db.execute("SELECT id, status, error FROM inbox ORDER BY id").fetchall()


def _recorded(folder: Path) -> set[str]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as db:
        rows = db.execute("SELECT event_id FROM events WHERE inbox_id IS NOT NULL")
        return {event_id.removeprefix("slow:") for (event_id,) in rows}


def _config(tmp_path: Path) -> Path:
    config = write_setup(tmp_path, RULES)
    config.write_text(
        config.read_text().replace(
            "channels:\n", f"channels:\n  slow: {{provider: stalling, webhook_secret: {SECRET}}}\n"
        )
    )
    return config


def test_a_parse_stuck_on_one_body_holds_up_nothing_else(tmp_path, serve, stalling) -> None:
    server = serve(_config(tmp_path))
    url = f"{server.url}/webhooks/slow/{SECRET}"
    healthz = f"{server.url}/healthz"
    with httpx.Client(timeout=5) as client:
        # hangs on c1's first body, spins on c3's: each acknowledged, as any body is
        assert client.post(url, content=_event(1, "c1", "hang")).status_code == 200
        wait_for(lambda: stalling.ENTERED == ["hang"])  # type: ignore[attr-defined]
        # while the parse hangs, webhooks are acknowledged at once (short timeouts) and
        # processed: the store waits for no plugin code
        for n in range(2, 6):
            assert client.post(url, content=_event(n, f"c{n}")).status_code == 200
            assert client.get(healthz).status_code == 200
        assert client.post(url, content=_event(6, "c3", "spin")).status_code == 200
        assert client.post(url, content=_event(7, "c1", "after")).status_code == 200
        assert client.post(url, content=_event(8, "c8")).status_code == 200
        assert client.post(url, content=_event(9, "c9", "cooldown")).status_code == 200
        wait_for(lambda: {"e2", "e3", "e4", "e5", "e7", "e8"} <= _recorded(tmp_path))
        wait_for(lambda: [status for _, status, _ in _inbox(tmp_path)].count("failed") == 3)
        assert client.get(healthz).status_code == 200

    inbox = _inbox(tmp_path)
    failed = {inbox_id: error for inbox_id, status, error in inbox if status == "failed"}
    assert sorted(failed) == [1, 6, 9]  # c1's first body, c3's second: c1's next one went on
    assert "may not call set_cooldown" in (failed.pop(9) or "")
    assert _recorded(tmp_path) == {"e2", "e3", "e4", "e5", "e7", "e8"}
    reason = "the stalling provider's parse did not return within its budget (PARSE_BUDGET: 1 s)"
    assert set(failed.values()) == {reason}
    # the reason is rulekit's own wording: listed as it is, without --show-content
    listed = CliRunner().invoke(cli, ["requeue", "--config", str(tmp_path / "rulekit.yaml")])
    assert listed.exit_code == 0, listed.output
    assert listed.output.count(reason) == 2

    # once the plugin is mended (here: the bodies no longer stall it), requeued, they are read
    stalling.RELEASE.set()  # type: ignore[attr-defined]
    for inbox_id in failed:
        requeued = CliRunner().invoke(
            cli, ["requeue", str(inbox_id), "--config", str(tmp_path / "rulekit.yaml")]
        )
        assert requeued.exit_code == 0, requeued.output
    wait_for(lambda: {"e1", "e6"} <= _recorded(tmp_path))
    assert httpx.get(healthz, timeout=5).status_code == 200


def test_a_plugin_whose_parses_all_hang_has_its_items_set_aside_at_once(
    tmp_path, serve, stalling
) -> None:
    """Each stuck parse holds one of the plugin's threads; once all are held, the plugin's
    next bodies are set aside without a thread (not started), and the state a given-up parse
    was handed answers it no more."""
    server = serve(_config(tmp_path))
    url = f"{server.url}/webhooks/slow/{SECRET}"
    with httpx.Client(timeout=5) as client:
        for n in range(HOOKS_IN_FLIGHT):
            body = _event(n, f"c{n}", "state")
            assert client.post(url, content=body).status_code == 200
        assert client.post(url, content=_event(50, "c50")).status_code == 200
        wait_for(lambda: len(_inbox(tmp_path)) == HOOKS_IN_FLIGHT + 1)
        wait_for(lambda: all(status == "failed" for _, status, _ in _inbox(tmp_path)))
    errors = [error or "" for _, _, error in _inbox(tmp_path)]
    assert all("did not return within its budget" in error for error in errors[:-1])
    assert errors[-1] == (
        f"the stalling provider's parse was not started: {HOOKS_IN_FLIGHT} of its calls run"
        " over their budget (PARSE_BUDGET: 1 s)"
    )
    stalling.RELEASE.set()  # type: ignore[attr-defined]
    wait_for(lambda: len(stalling.ENTERED) == HOOKS_IN_FLIGHT)  # type: ignore[attr-defined]
    assert stalling.ENTERED == ["GivenUp"] * HOOKS_IN_FLIGHT  # type: ignore[attr-defined]


def test_stuck_channel_timers_and_timer_due_hold_up_nothing_else(tmp_path, serve, stalling) -> None:
    """The provider's ``channel_timers`` (asked for a body's events) and ``timer_due`` (for a
    timer due) are its code too: over their budget, the body is set aside and the timer ends
    in error, each with the reason, while the other webhooks are acknowledged and processed."""
    server = serve(_config(tmp_path))
    url = f"{server.url}/webhooks/slow/{SECRET}"
    with httpx.Client(timeout=5) as client:
        assert client.post(url, content=_event(1, "c1", "timers")).status_code == 200
        wait_for(lambda: stalling.ENTERED == ["channel_timers"])  # type: ignore[attr-defined]
        for n in range(2, 4):
            assert client.post(url, content=_event(n, f"c{n}")).status_code == 200
        assert client.post(url, content=_event(4, "c4", "soon")).status_code == 200
        wait_for(lambda: "timer_due" in stalling.ENTERED)  # type: ignore[attr-defined]
        for n in range(5, 7):
            assert client.post(url, content=_event(n, f"c{n}")).status_code == 200
        wait_for(lambda: {"e2", "e3", "e4", "e5", "e6"} <= _recorded(tmp_path))

        def timer_ended() -> list[tuple[str, str]]:
            with sqlite3.connect(tmp_path / "rulekit.sqlite3") as db:
                query = "SELECT status, reason FROM timers WHERE status != 'pending'"
                return db.execute(query).fetchall()

        assert wait_for(timer_ended) == [
            (
                "error",
                "the stalling provider's timer_due did not return within its budget"
                " (PARSE_BUDGET: 1 s)",
            )
        ]
        assert client.get(f"{server.url}/healthz").status_code == 200
    assert [(i, status, error) for i, status, error in _inbox(tmp_path) if i == 1] == [
        (
            1,
            "failed",
            "the stalling provider's channel_timers did not return within its budget"
            " (PARSE_BUDGET: 1 s)",
        )
    ]


def test_the_parse_budget_is_the_documented_one() -> None:
    text = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    assert f"**{parsing.PARSE_BUDGET:g} seconds** per body" in text
    assert f"(PARSE_BUDGET: {parsing.PARSE_BUDGET:g} s)" in text
    assert f"Up to **{HOOKS_IN_FLIGHT}** calls of a plugin" in text
