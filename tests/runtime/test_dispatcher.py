"""The dispatcher against fake services: 429 storms and hung downstreams, per-destination
order, dead letters and their retry."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup
from rulekit_chatra.testing import FakeChatra

from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.fakehttp import FakeService, Response

CHAT_A, CHAT_B = "-100111", "-100222"

TELEGRAM_RULES = """\
- name: Tell the team
  on: {channel: online-chat, event: created}
  do:
    - telegram:
        chat_id: "{{ '-100111' if message.text.startswith('A') else '-100222' }}"
        text: "{{ message.text }}"
"""


def done_jobs(folder) -> int:
    """How many jobs the daemon whose files are in ``folder`` has done."""
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        return conn.execute("SELECT count(*) FROM outbox WHERE status = 'done'").fetchone()[0]
    finally:
        conn.close()


def attempts_to(folder, channel: str) -> int:
    """How many attempts of jobs to ``channel`` the daemon has recorded."""
    conn = sqlite3.connect(folder / "rulekit.sqlite3")
    try:
        return conn.execute(
            "SELECT count(*) FROM attempts a JOIN outbox o ON o.id = a.job_id"
            " WHERE o.destination LIKE ?",
            (f"%{channel}",),
        ).fetchone()[0]
    finally:
        conn.close()


@pytest.mark.slow
def test_a_429_storm_pauses_only_its_destination_and_keeps_its_order(tmp_path, serve):
    with FakeTelegram() as telegram:
        server = serve(write_setup(tmp_path, TELEGRAM_RULES, telegram=telegram))
        telegram.flood(retry_after=1, chat=CHAT_A, times=2)
        for n, text in enumerate(["A1", "B1", "A2", "A3", "B2"], start=1):
            assert httpx.post(server.webhook_url, content=chat_started(n, text)).status_code == 200
        wait_for(lambda: len(telegram.messages(CHAT_A, accepted=True)) == 3, timeout=30)
        wait_for(lambda: len(telegram.messages(CHAT_B, accepted=True)) == 2, timeout=30)

        a_calls = telegram.messages(CHAT_A)
        # order per destination kept, every message delivered once
        assert [m.text for m in telegram.messages(CHAT_A, accepted=True)] == ["A1", "A2", "A3"]
        assert [m.text for m in telegram.messages(CHAT_B, accepted=True)] == ["B1", "B2"]
        # nothing was sent into a Retry-After window
        for refused, following in itertools.pairwise(a_calls):
            if refused.status == 429:
                assert following.at - refused.at >= 1.0 - 0.05


def test_a_paused_destination_does_not_hold_up_the_others(tmp_path, serve):
    """Flood control holds chat A for a minute: chat B's messages arrive inside that window
    (the window itself is the bound, not the machine's speed), and nothing reaches chat A."""
    pause = 60
    with FakeTelegram() as telegram:
        server = serve(write_setup(tmp_path, TELEGRAM_RULES, telegram=telegram))
        telegram.flood(retry_after=pause, chat=CHAT_A)
        for n, text in enumerate(["A1", "B1", "A2", "B2"], start=1):
            assert httpx.post(server.webhook_url, content=chat_started(n, text)).status_code == 200
        wait_for(lambda: telegram.messages(CHAT_A), timeout=pause / 3)
        refused_at = telegram.messages(CHAT_A)[0].at
        accepted = wait_for(lambda: telegram.messages(CHAT_B, accepted=True)[1:], timeout=pause / 3)
        assert accepted[-1].at < refused_at + pause
        assert [m.text for m in telegram.messages(CHAT_B, accepted=True)] == ["B1", "B2"]
        assert [(m.text, m.status) for m in telegram.messages(CHAT_A)] == [("A1", 429)]


def test_a_hung_destination_does_not_hold_up_the_others(tmp_path, serve):
    with FakeSlack() as slack:
        rules = """\
- name: Post
  on: {channel: online-chat, event: created}
  do:
    - slack:
        channel: "{{ '#slow' if message.text == 'slow' else '#fast' }}"
        text: "{{ message.text }}"
"""
        server = serve(write_setup(tmp_path, rules, slack=slack))
        slack.hang(3600, channel="#slow")  # until released below
        httpx.post(server.webhook_url, content=chat_started(1, "slow"))
        wait_for(lambda: slack.messages("#slow"), timeout=30)  # the call is hanging
        httpx.post(server.webhook_url, content=chat_started(2, "fast"))
        # the other destination's message arrives while the first call still hangs: that
        # call has not ended (not even by its timeout: no attempt of it is on record)
        wait_for(lambda: slack.messages("#fast", accepted=True), timeout=30)
        assert attempts_to(tmp_path, "#slow") == 0
        slack.service.release()
        wait_for(lambda: done_jobs(tmp_path) == 2, timeout=30)


def test_out_of_retries_is_a_visible_dead_letter_that_can_be_retried(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra, dispatcher={"max_attempts": 2})
    server = serve(config)
    subscription = server.call(_subscribe(server))
    chatra.fail(503)
    chatra.fail(500)
    httpx.post(server.webhook_url, content=chat_started(1))
    message = server.call(_next(subscription, "dead_letter"))
    assert message["action"] == "autoreply"
    assert "gave up after 2 attempts" in message["error"]
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'rulekit_dead_letters_total{action="autoreply"} 1.0' in metrics
    assert len(chatra.sent) == 2  # two attempts, both refused
    store = server.daemon.store
    with store.transaction() as state:
        (job,) = state.jobs(status="dead")
        assert [a.outcome for a in state.attempts(job.id)] == ["retry", "dead"]
        state.requeue_job(job.id)
    server.call(_wake(server))
    wait_for(lambda: len(chatra.sent) == 3)

    def done() -> list:
        with store.transaction() as state:
            return state.jobs(status="done")

    wait_for(done)


def test_a_permanent_failure_is_dead_at_once(tmp_path, serve, chatra):
    server = serve(write_setup(tmp_path, chatra=chatra))
    chatra.script(Response(400, {"message": "bad client"}))
    httpx.post(server.webhook_url, content=chat_started(1))

    def dead() -> list:
        with server.daemon.store.transaction() as state:
            return state.jobs(status="dead")

    (job,) = wait_for(dead)
    assert job.attempts == 1
    # the service's refusal, as the service said it
    assert job.last_error is not None and "bad client" in job.last_error, job.last_error


async def _subscribe(server):
    return server.daemon.feed.subscribe()


async def _next(subscription, kind: str) -> dict:
    async with asyncio.timeout(20):
        while True:
            message = await subscription.get()
            if message["type"] == kind:
                return message


async def _wake(server) -> None:
    server.daemon.dispatcher.wake()


def test_emails_waiting_for_their_domain_leave_the_concurrency_to_the_others(tmp_path, serve):
    """Every new chat mails the team at one domain (one message a minute allowed there) and
    posts to its own Slack channel, with two calls at once allowed. The emails that must wait
    for their domain's next slot wait without holding a call slot: every Slack message is
    sent while they wait, none waits for an email to give up (an email gives up waiting
    when its slot would come too late for the job's lease: a retry, nothing sent)."""
    from rulekit.testing.fake_smtp import FakeSmtp

    rules = """\
- name: Mail the team
  on: {channel: online-chat, event: created}
  do:
    - email: {to: [team@example.com], subject: New chat, text: "{{ message.text }}"}
- name: Post
  on: {channel: online-chat, event: created}
  do:
    - slack: {channel: "#chat-{{ message.text }}", text: "{{ message.text }}"}
"""
    with FakeSlack() as slack, FakeSmtp() as smtp:
        smtp_settings = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "from": "bot@shop.example",
            "timeout": 1,
            "rate_limit": "1/m",
        }
        config = write_setup(
            tmp_path,
            rules,
            slack=slack,
            dispatcher={"concurrency": 2},
            extra=f"  smtp: {smtp_settings!r}\n",
        )
        chats = 5
        # an email may wait for its slot the lease less its timeout (four steps): 16 s here
        server = serve(config, job_lease=20)
        for n in range(chats):
            assert (
                httpx.post(server.webhook_url, content=chat_started(n, f"c{n}")).status_code == 200
            )
        wait_for(lambda: len(slack.messages(accepted=True)) == chats, timeout=60)
        conn = sqlite3.connect(tmp_path / "rulekit.sqlite3")
        try:
            gave_up = conn.execute(
                "SELECT count(*) FROM attempts WHERE error LIKE '%no sending slot%'"
            ).fetchone()[0]
        finally:
            conn.close()
        assert gave_up == 0
        assert len(smtp.messages) == 1


@pytest.mark.slow
def test_a_call_waiting_for_its_turn_through_a_reload_goes_with_the_new_config(tmp_path, serve):
    # a reply waiting out Chatra's service-wide Retry-After when the config changed (new API
    # keys, another account) was sent with the config loaded when its attempt began
    with FakeChatra() as old, FakeChatra(public_key="pubNEW", secret_key="secNEW") as new:
        old.rate_limit(retry_after=10)  # the first reply: the whole service pauses
        config = write_setup(tmp_path, chatra=old)
        server = serve(config)
        assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
        wait_for(lambda: old.requests)  # paused
        assert httpx.post(server.webhook_url, content=chat_started(2)).status_code == 200
        wait_for(lambda: waiting_lanes(server) == 2)  # both replies wait for the service
        config.write_text(
            config.read_text()
            .replace(old.base_url, new.base_url)
            .replace(old.public_key, new.public_key)
            .replace(old.secret_key, new.secret_key)
        )
        assert server.call(server.daemon.reload("test")) is True
        wait_for(lambda: done_jobs(tmp_path) == 2, timeout=30)
        assert len(old.requests) == 1  # the 429 only
        assert sorted(m["text"] for m in new.sent) == ["Hello Visitor 1", "Hello Visitor 2"]


def waiting_lanes(server) -> int:
    """How many of the daemon's lanes wait for their destination's or service's turn."""

    async def count() -> int:
        return sum(lane.waiting for lane in server.daemon.dispatcher._lanes.values())

    return server.call(count())


HOOK_SECRET = "whsec-0123456789abcdef"
TWO_TARGETS = """\
- name: Tell the CRM and the ERP
  on: {channel: online-chat, event: created}
  do:
    - webhook: {to: crm}
    - webhook: {to: erp}
"""


def test_a_reloaded_concurrency_applies_without_a_restart(tmp_path, serve):
    # the call slots were made once, at the start: a reload's concurrency changed nothing
    # (and a lowered one left the bound on the calls a crash repeats at the old number)
    with FakeService() as crm, FakeService() as erp:
        crm.script(Response(200, {}, delay=120))  # held until released
        erp.script(Response(200, {}, delay=120))
        targets = "".join(
            f"    {name}: {{url: '{target.base_url}/hook', secret: {HOOK_SECRET}, timeout: 60}}\n"
            for name, target in (("crm", crm), ("erp", erp))
        )
        extra = "integrations:\n  webhooks:\n" + targets
        config = write_setup(tmp_path, TWO_TARGETS, dispatcher={"concurrency": 1}, extra=extra)
        server = serve(config)
        assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
        wait_for(lambda: crm.requests or erp.requests)  # one call under way: the only slot
        config.write_text(config.read_text().replace('"concurrency": 1', '"concurrency": 2'))
        assert server.call(server.daemon.reload("test")) is True
        wait_for(lambda: crm.requests and erp.requests)  # the second slot, both held
        crm.release()
        erp.release()
        wait_for(lambda: done_jobs(tmp_path) == 2)
        assert len(crm.requests) == len(erp.requests) == 1
