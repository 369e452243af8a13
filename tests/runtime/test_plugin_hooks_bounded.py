"""A provider's code that a webhook waits for (``authorize_webhook``, ``conversation_key``) runs
off the event loop within a budget: a plugin whose hook blocks or never returns holds up only
its own channel's webhooks, which are answered 503 (nothing acknowledged, nothing stored),
while the other channels' webhooks and ``/healthz`` are answered as usual; a plugin has at
most :data:`~rulekit.channels.hookrunner.HOOKS_IN_FLIGHT` threads, and once all are held by
calls over their budget its next webhooks are refused at once. No provider code runs on the
event loop at all (webhooks, a reload, the dispatcher's calls)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from daemons import install_plugin, wait_for, write_setup

from rulekit.channels.hookrunner import HOOK_BUDGET, HOOKS_IN_FLIGHT

SECRET = "web-secret-0123456789"
SLOW_SECRET = "slow-secret-0123456789"

PLUGIN = """\
import threading

from rulekit import hookimpl
from rulekit.channels.webhook import WebhookProvider

RELEASE = threading.Event()
ENTERED = []
RAN_IN = []  # (hook, thread) of every call of the provider's code


def _ran(hook):
    RAN_IN.append((hook, threading.current_thread().name))


class Stalling(WebhookProvider):
    name = "stalling"
    description = "a webhook channel whose hooks block when a request asks them to"

    @property
    def service_account(self):
        _ran("service_account")
        return self.channel

    def fetches_updates(self):
        _ran("fetches_updates")
        return False

    can_reply = True

    def reply_problem(self):
        _ran("reply_problem")
        return None

    def update_problem(self):
        _ran("update_problem")
        return "the stalling provider cannot change client data"

    def reply_length_problem(self, text):
        _ran("reply_length_problem")
        if text == "stall":
            RELEASE.wait(60)
        return None

    def sender_problem(self, conversation):
        _ran("sender_problem")
        return None

    async def send_reply(self, reply, *, timeout):
        return {"sent": reply.text}

    def sent_message_ids(self, answer):
        _ran("sent_message_ids")
        return []

    def authorize_webhook(self, headers):
        _ran("authorize_webhook")
        if headers.get("x-stall") == "forever":
            ENTERED.append("authorize")
            RELEASE.wait(60)  # as a call to a service that never answers
        if headers.get("x-stall") == "loop":
            ENTERED.append("authorize")
            while not RELEASE.is_set():  # a plugin's endless loop
                pass
        return True

    def conversation_key(self, data):
        _ran("conversation_key")
        if isinstance(data, dict) and data.get("stall"):
            ENTERED.append("key")
            RELEASE.wait(60)
        return "slow:c1"


@hookimpl
def rulekit_register_providers(register):
    register.add(Stalling)
"""


@pytest.fixture
def stalling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    install_plugin(tmp_path, monkeypatch, "rulekit_stalling", PLUGIN)
    import rulekit_stalling  # type: ignore[import-not-found]

    yield rulekit_stalling
    rulekit_stalling.RELEASE.set()  # the stuck hooks return before the daemon stops
    sys.modules.pop("rulekit_stalling", None)


def _event(n: int, **extra: object) -> bytes:
    return json.dumps(
        {"id": f"e{n}", "event": "created", "conversation": {"id": f"c{n}"}, **extra}
    ).encode()


def _inbox(folder: Path) -> list[str]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as db:
        return [channel for (channel,) in db.execute("SELECT channel FROM inbox ORDER BY id")]


@pytest.mark.slow  # (the default run has the console's test below: the same stall, shorter)
def test_a_stuck_provider_hook_holds_up_only_its_own_channel(tmp_path, serve, stalling) -> None:
    config = write_setup(tmp_path)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            "channels:\n"
            f"  web: {{provider: webhook, webhook_secret: {SECRET}}}\n"
            f"  slow: {{provider: stalling, webhook_secret: {SLOW_SECRET}}}\n",
        )
    )
    server = serve(config)
    slow = f"{server.url}/webhooks/slow/{SLOW_SECRET}"
    web = f"{server.url}/webhooks/web/{SECRET}"
    stalls = ["loop"] + ["forever"] * (2 * HOOKS_IN_FLIGHT - 1)  # (one spins: it takes a CPU)
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(len(stalls) + 2) as pool:
        stuck = [
            pool.submit(client.post, slow, content=_event(n), headers={"x-stall": how})
            for n, how in enumerate(stalls)
        ]
        stuck.append(pool.submit(client.post, slow, content=_event(99, stall=True)))
        wait_for(lambda: len(stalling.ENTERED) >= HOOKS_IN_FLIGHT)  # type: ignore[attr-defined]
        # meanwhile the daemon answers everything else (the loop is free: short timeouts)
        for n in range(5):
            answer = httpx.post(web, content=_event(100 + n), timeout=5)
            assert answer.status_code == 200, answer.text
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        # the stuck plugin's own webhooks: 503 to retry, none acknowledged
        answers = [future.result() for future in stuck]
        assert [a.status_code for a in answers] == [503] * len(answers)
        assert all(a.headers["retry-after"] for a in answers)
        said = " ".join(a.json()["error"] for a in answers)
        assert "did not answer" in said and "stalling" in said
        # its threads are all held: the plugin's next webhook is refused at once
        again = httpx.post(slow, content=_event(200), timeout=5)
        assert again.status_code == 503, again.text
        assert "calls under way" in again.json()["error"]
        assert len(stalling.ENTERED) == HOOKS_IN_FLIGHT  # type: ignore[attr-defined]
        assert _inbox(tmp_path) == ["web"] * 5

    # once its hooks return, the channel is answered again
    stalling.RELEASE.set()  # type: ignore[attr-defined]

    def accepted() -> bool:
        return httpx.post(slow, content=_event(300), timeout=5).status_code == 200

    wait_for(accepted)
    assert _inbox(tmp_path) == ["web"] * 5 + ["slow"]


def test_no_provider_code_runs_on_the_event_loop(tmp_path, serve, stalling) -> None:
    """Webhooks, a reload, the dispatcher's calls and the fetchers ask the provider's code off
    the event loop: in the plugin's threads, or while the snapshot loads."""
    rules = (
        "- name: Greet\n"
        "  on: {channel: slow, event: created}\n"
        "  do:\n"
        "    - autoreply: {text: hello}\n"
    )
    config = write_setup(tmp_path, rules)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            f"channels:\n  slow: {{provider: stalling, webhook_secret: {SLOW_SECRET}}}\n",
        )
    )
    server = serve(config)
    slow = f"{server.url}/webhooks/slow/{SLOW_SECRET}"
    for n in range(3):
        assert httpx.post(slow, content=_event(n), timeout=10).status_code == 200
    assert server.call(server.daemon.reload("test")) is True
    assert httpx.post(slow, content=_event(9), timeout=10).status_code == 200

    def jobs_done() -> bool:
        with sqlite3.connect(tmp_path / "rulekit.sqlite3") as db:
            return db.execute("SELECT status FROM outbox").fetchall() == [("done",)] * 4

    wait_for(jobs_done)
    ran_in = stalling.RAN_IN  # type: ignore[attr-defined]
    hooks = {hook for hook, _ in ran_in}
    assert {
        "authorize_webhook",
        "conversation_key",
        "reply_problem",
        "sender_problem",
        "sent_message_ids",
        "service_account",
    } <= hooks
    on_the_loop = [hook for hook, thread in ran_in if thread == server.thread.name]
    assert on_the_loop == []


def test_a_stuck_provider_check_of_the_console_answers_503(tmp_path, serve, stalling) -> None:
    """The console's checks are the provider's code too: one that does not answer is a 503 to
    retry (nothing recorded), and the console and the webhooks go on meanwhile."""
    token = "anna-console-token-0123456789"
    digest = hashlib.sha256(token.encode()).hexdigest()
    config = write_setup(tmp_path, "[]\n")
    config.write_text(
        config.read_text()
        .replace(
            "channels:\n",
            f"channels:\n  slow: {{provider: stalling, webhook_secret: {SLOW_SECRET}}}\n",
        )
        .replace(
            "channels: [online-chat]}",
            f"channels: [online-chat, slow], token_sha256: {digest}}}",
        )
    )
    server = serve(config)
    slow = f"{server.url}/webhooks/slow/{SLOW_SECRET}"
    assert httpx.post(slow, content=_event(1), timeout=10).status_code == 200
    console = httpx.Client(
        base_url=f"{server.url}/console/api",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    messages = "/conversations/slow:c1/messages"
    wait_for(lambda: console.get("/conversations/slow:c1").status_code == 200)
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(console.post, messages, json={"text": "stall"})
        ran_in = stalling.RAN_IN  # type: ignore[attr-defined]
        wait_for(lambda: ("reply_length_problem", "rulekit-hooks-stalling") in ran_in)
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert httpx.post(slow, content=_event(2), timeout=5).status_code == 200
        answer = stuck.result()
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "1"
        assert "did not answer" in answer.text
        stalling.RELEASE.set()  # type: ignore[attr-defined]
        sent = console.post(messages, json={"text": "hello"})
        assert sent.status_code == 202, sent.text
    console.close()
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)


def test_a_provider_hook_that_raises_refuses_only_its_request(tmp_path, serve, stalling) -> None:
    """A hook's bug is no stall: ``authorize_webhook`` raising is a wrong header (404),
    ``conversation_key`` raising is "cannot tell" (the webhook accepted)."""
    module = stalling
    module.Stalling.authorize_webhook = lambda self, headers: (
        1
        / int(  # type: ignore[attr-defined]
            headers.get("x-divisor", "1")
        )
    )
    config = write_setup(tmp_path)
    config.write_text(
        config.read_text().replace(
            "channels:\n",
            f"channels:\n  slow: {{provider: stalling, webhook_secret: {SLOW_SECRET}}}\n",
        )
    )
    server = serve(config)
    slow = f"{server.url}/webhooks/slow/{SLOW_SECRET}"
    refused = httpx.post(slow, content=_event(1), headers={"x-divisor": "0"}, timeout=5)
    assert refused.status_code == 404
    assert httpx.post(slow, content=_event(2), timeout=5).status_code == 200
    assert _inbox(tmp_path) == ["slow"]


def test_the_budgets_are_the_documented_ones() -> None:
    text = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    assert f"**{HOOK_BUDGET:g} seconds**" in text
    assert f"at most **{HOOKS_IN_FLIGHT}** such threads" in text
