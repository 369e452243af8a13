"""Daemons sharing PostgreSQL, one of them frozen (``SIGSTOP``: a long pause of the process, a VM
migrated, a laptop's lid) holding a claim, and going on (``SIGCONT``) after its lease ran out
and another daemon took the work over: it must not act on the stale claim.

Runs when ``RULEKIT_TEST_POSTGRES`` names a reachable server; skipped otherwise.
"""

from __future__ import annotations

import signal

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup
from pgproxy import PgProxy

from rulekit.store.postgres import PostgresStore

SLACK_RULES = """\
- name: Tell Slack
  on: {channel: online-chat, event: created}
  do:
    - slack: {channel: "#support", text: "New chat from {{ client.display_name }}"}
"""

LEASE = 2.0
"""``--job-lease`` of the daemons: how long a frozen daemon's claim lasts."""


def jobs(url: str) -> list:
    store = PostgresStore(url)
    try:
        with store.transaction() as state:
            return state.jobs(limit=10)
    finally:
        store.close()


@pytest.fixture
def proxied(postgres_url):
    proxies: list[PgProxy] = []

    def make(marker: bytes, *, rows: bool = False) -> PgProxy:
        proxies.append(PgProxy(postgres_url, marker, rows=rows))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.mark.slow
def test_a_daemon_frozen_after_recording_a_calls_start_does_not_call_once_taken_over(
    tmp_path, processes, chatra, fake_slack, postgres_url, proxied
):
    """The first daemon records that its call starts and freezes before the call leaves; its
    claim runs out, the second daemon takes the job over, posts the message and records it
    done. When the first goes on, it finds (its clock showing most of the lease gone) that the
    claim is no longer its own and leaves the call alone: Slack gets the message once."""
    proxy = proxied(b"call_started_at = CASE WHEN v.first")
    config = write_setup(tmp_path, SLACK_RULES, chatra=chatra, slack=fake_slack)
    text = config.read_text()
    frozen_config = tmp_path / "frozen.yaml"
    frozen_config.write_text(
        text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: '{proxy.url}'")
    )
    config.write_text(
        text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    frozen = processes(frozen_config, "--job-lease", f"{LEASE:g}").wait_ready()
    response = httpx.post(
        frozen.webhook_url,
        content=chat_started(1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    # the start is committed in the database: the daemon freezes before it reads the answer
    assert proxy.caught.wait(60)
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        proxy.release()
        (job,) = jobs(postgres_url)
        assert job.call_started_by is not None and job.status == "pending"
        other = processes(config, "--job-lease", f"{LEASE:g}").wait_ready()
        # the lease runs out, the other daemon takes the job over and makes the call
        wait_for(lambda: [j.status for j in jobs(postgres_url)] == ["done"], timeout=60)
        assert len(fake_slack.messages("#support")) == 1
        assert other.proc.poll() is None
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: "taken over" in frozen.output() or len(fake_slack.messages("#support")) > 1,
        timeout=60,
    )
    assert len(fake_slack.messages("#support")) == 1, frozen.output()
    (job,) = jobs(postgres_url)
    assert job.status == "done"


@pytest.mark.slow
def test_a_daemon_frozen_during_its_call_leaves_the_outcome_to_the_daemon_that_took_over(
    tmp_path, processes, chatra, fake_slack, postgres_url
):
    """The first daemon's post reaches Slack and the daemon freezes before the answer; its
    claim runs out and the second daemon takes the job over and posts again (the first one's
    call was made: that repeat cannot be avoided). While the second one's call is under way, the
    first goes on with its answer: it must not record its outcome over the job the second one
    now holds (which then, its call's start gone, would no longer be able to renew its claim
    and the job could be taken a third time). Its outcome is left out; the second one's is
    recorded."""
    config = write_setup(tmp_path, SLACK_RULES, chatra=chatra, slack=fake_slack)
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    fake_slack.hang(0.2)  # the first post: answered while its daemon is frozen
    # the second post: still under way when the first daemon goes on and records what it has
    # (within Slack's own timeout, 10 s, so that the second daemon's outcome is done)
    fake_slack.hang(8)
    frozen = processes(config, "--job-lease", f"{LEASE:g}").wait_ready()
    response = httpx.post(
        frozen.webhook_url,
        content=chat_started(1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    wait_for(lambda: len(fake_slack.messages("#support")) == 1, timeout=60)
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        other = processes(config, "--job-lease", f"{LEASE:g}").wait_ready()
        wait_for(lambda: len(fake_slack.messages("#support")) == 2, timeout=60)
        (job,) = jobs(postgres_url)
        taker = job.call_started_by
        assert taker is not None and taker.endswith(f":{other.proc.pid}")
    finally:
        frozen.proc.send_signal(signal.SIGCONT)

    # the first daemon goes on: its outcome recorded over the job (before the fix), or left
    wait_for(
        lambda: f"job {job.id} slack: " in frozen.output() or "taken over" in frozen.output(),
        timeout=30,
    )
    during = jobs(postgres_url)[0]
    if during.status == "pending":  # the taker's call under way: its start is kept
        assert during.call_started_by == taker, during
    wait_for(lambda: jobs(postgres_url)[0].status == "done", timeout=60)
    assert "taken over" in frozen.output()
    done = jobs(postgres_url)[0]
    assert done.call_started_by is None
    # the first daemon's call counted once, as interrupted (by the taker), and the taker's
    assert done.attempts == 2, done
    assert len(fake_slack.messages("#support")) == 2


WEB_SECRET = "web-secret-0123456789"
WEB_RULES = """\
- name: Tell Slack
  on: {channel: web, event: created}
  do:
    - slack: {channel: "#orders", text: "Order from {{ client.name }}"}
"""
INBOX_LEASE = 30.0
"""The processor's lease on an inbox item it claimed (rulekit.runtime.processor)."""


@pytest.mark.slow
def test_a_daemon_frozen_holding_an_inbox_item_does_not_record_it_again_once_taken_over(
    tmp_path, processes, chatra, fake_slack, postgres_url, proxied
):
    """The first daemon claims a webhook's inbox item and freezes before it records it; its
    claim runs out and the second daemon processes the item: the event, its job, the message.
    When the first goes on, it must not record the item's events too. Here the events carry no
    id of their own (a sender's normalized event without ``id``, ``occurred_at`` or a message
    id): their id is derived from their content when they are read, so each daemon reading the
    body gets another one, and only the item's claim can tell that it was taken over."""
    proxy = proxied(b"set_config('synchronous_commit', 'off', true)", rows=True)
    config = write_setup(
        tmp_path,
        WEB_RULES,
        chatra=chatra,
        slack=fake_slack,
        extra=f"  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n",
    )
    text = config.read_text()
    # the channel goes under channels: (write_setup's extra comes last, after integrations)
    extra = f"  web: {{provider: webhook, webhook_secret: {WEB_SECRET}}}\n"
    text = text.replace(extra, "").replace("channels:\n", "channels:\n" + extra, 1)
    frozen_config = tmp_path / "frozen.yaml"
    frozen_config.write_text(
        text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: '{proxy.url}'")
    )
    config.write_text(
        text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    frozen = processes(frozen_config).wait_ready()
    order = {"event": "created", "client": {"name": "Ada"}, "conversation": {"id": "o1"}}
    response = httpx.post(f"{frozen.url}/webhooks/web/{WEB_SECRET}", json=order, timeout=10)
    assert response.status_code == 200, response.text
    # the claim is committed: the daemon freezes before it reads the answer
    assert proxy.caught.wait(60)
    frozen.proc.send_signal(signal.SIGSTOP)
    try:
        proxy.release()
        processes(config).wait_ready()
        # once the claim ran out (INBOX_LEASE), the other daemon processes the item
        wait_for(lambda: len(fake_slack.messages("#orders")) == 1, timeout=INBOX_LEASE + 60)
        wait_for(lambda: [j.status for j in jobs(postgres_url)] == ["done"], timeout=60)
    finally:
        frozen.proc.send_signal(signal.SIGCONT)
    wait_for(
        lambda: "taken over" in frozen.output() or len(history(postgres_url)) > 1,
        timeout=60,
    )
    assert len(history(postgres_url)) == 1, frozen.output()
    assert len(jobs(postgres_url)) == 1
    assert len(fake_slack.messages("#orders")) == 1


def history(url: str) -> list:
    store = PostgresStore(url)
    try:
        with store.transaction() as state:
            return state.history(limit=10)
    finally:
        store.close()
