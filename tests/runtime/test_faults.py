"""Faults around a call: a database blip never costs an attempt, a service's Retry-After holds
for the whole service, a conversation's replies keep their order."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from daemons import chat_fragment, chat_started, read, wait_for, write_setup

from rulekit.errors import StoreUnavailable
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.fake_slack import FakeSlack

TIMER_RESOLUTION = 0.01
"""How early an event loop timer may fire (asyncio's clock resolution, with margin)."""


class _Faulty:
    """A transaction's state whose chosen methods fail (``StoreUnavailable``) a number of times,
    or take a while."""

    def __init__(self, state: Any, store: FaultyStore) -> None:
        self._state = state
        self._store = store

    def __getattr__(self, name: str) -> Any:
        self._store.asked[name] += 1
        if self._store.failures.get(name, 0) > 0:
            self._store.failures[name] -= 1
            raise StoreUnavailable(f"injected: {name} cannot reach the database")
        if name in self._store.slow:
            time.sleep(self._store.slow[name])
        if name in self._store.nothing:
            return lambda *args, **kwargs: []
        return getattr(self._state, name)


class FaultyStore(SQLiteStore):
    """A real SQLite store that is unavailable (or slow) at chosen points, as a database blip
    (or a slow disk) makes it. ``shared``: it claims to be shared by several daemons, so the
    dispatcher also goes through the store's pacing (reserve a slot, read the pauses) as it
    does on PostgreSQL."""

    def __init__(
        self,
        path: Any,
        failures: dict[str, int] | None = None,
        slow: dict[str, float] | None = None,
        shared: bool = False,
    ) -> None:
        super().__init__(path)
        self.failures = failures or {}
        self.slow = slow or {}
        self.nothing: set[str] = set()
        """Methods that find nothing (``claim_jobs``: the dispatcher claims nothing)."""
        self.asked: Counter[str] = Counter()
        """How many times each method was asked for."""
        self.shares_pacing = shared

    @contextmanager
    def transaction(self) -> Iterator[Any]:  # type: ignore[override]
        with super().transaction() as state:
            yield _Faulty(state, self)


SLACK_RULES = """\
- name: Tell Slack
  on: {channel: online-chat, event: created}
  do:
    - slack: {channel: "#support", text: "New chat from {{ client.display_name }}"}
"""


@pytest.mark.slow
def test_a_database_blip_around_a_call_never_consumes_an_attempt(tmp_path, serve):
    """The store fails twice at each point around a call (reserving the send slot, recording
    the call's start, recording its outcome) with only three attempts allowed: the message is
    sent exactly once and the job has exactly one attempt."""
    with FakeSlack() as slack:
        config = write_setup(tmp_path, SLACK_RULES, slack=slack, dispatcher={"max_attempts": 3})
        failures = {"reserve_pace": 2, "begin_call": 2, "record_attempt": 2}
        store = FaultyStore(tmp_path / "rulekit.sqlite3", failures, shared=True)
        try:
            server = serve(config, store=store)
            assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200

            [job] = wait_for(lambda: read(tmp_path, lambda s: s.jobs(status="done")), timeout=30)
            assert [m.text for m in slack.messages("#support")] == ["New chat from Visitor 1"]
            assert job.attempts == 1
            assert [a.outcome for a in read(tmp_path, lambda s: s.attempts(job.id))] == ["done"]
            assert failures == {"reserve_pace": 0, "begin_call": 0, "record_attempt": 0}
            server.stop()
        finally:
            store.close()


ASSIGN_RULES = """\
- name: Assign
  on: {channel: online-chat, event: created}
  do:
    - assign: {group: support, strategy: round_robin}
"""


@pytest.mark.slow
def test_a_database_blip_inside_an_action_never_consumes_an_attempt(tmp_path, serve, chatra):
    """An action that uses the store itself (``assign`` picks its agent in a transaction of its
    own) meets the blip inside its call, as many times as attempts are allowed: the call is
    made again once the store is back, as a store error, and the job is done at its first
    attempt."""
    config = write_setup(tmp_path, ASSIGN_RULES, chatra=chatra, dispatcher={"max_attempts": 3})
    failures = {"next_free_position": 3}
    store = FaultyStore(tmp_path / "rulekit.sqlite3", failures)
    try:
        server = serve(config, store=store)
        assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200

        jobs = wait_for(lambda: read(tmp_path, lambda s: s.jobs(status="done")), timeout=30)
        [job] = [job for job in jobs if job.action == "assign"]
        assert job.attempts == 1
        assert [a.outcome for a in read(tmp_path, lambda s: s.attempts(job.id))] == ["done"]
        assert failures == {"next_free_position": 0}
        assert read(tmp_path, lambda s: s.jobs(status="dead")) == []
        server.stop()
    finally:
        store.close()


REPLY_RULES = """\
- name: Echo
  on: {channel: online-chat, event: [created, message]}
  do:
    - autoreply: {text: "{{ message.text }}"}
"""


@pytest.mark.slow
def test_blips_at_every_store_call_around_a_refused_then_sent_reply(tmp_path, serve, chatra):
    """A Chatra reply on a store shared by daemons: the store fails twice at each of its calls
    around the send (recording the start, with the service's pauses and the conversation read
    in the same call; sharing Chatra's Retry-After; recording the outcome). Chatra refuses the
    first call with a 429; with two attempts allowed the reply is still sent, once, at the
    second attempt."""
    config = write_setup(tmp_path, REPLY_RULES, chatra=chatra, dispatcher={"max_attempts": 2})
    points = ["begin_call", "pause_pace", "record_attempt"]
    failures = dict.fromkeys(points, 2)
    store = FaultyStore(tmp_path / "rulekit.sqlite3", failures, shared=True)
    try:
        chatra.rate_limit(retry_after=1)
        server = serve(config, store=store)
        assert httpx.post(server.webhook_url, content=chat_started(1, "hi")).status_code == 200

        [job] = wait_for(lambda: read(tmp_path, lambda s: s.jobs(status="done")), timeout=60)
        assert [m["text"] for m in chatra.sent] == ["hi", "hi"]  # refused, then accepted
        assert [a.outcome for a in read(tmp_path, lambda s: s.attempts(job.id))] == [
            "retry",
            "done",
        ]
        assert failures == dict.fromkeys(points, 0)
        server.stop()
    finally:
        store.close()


def test_a_chatra_retry_after_pauses_every_reply_and_a_conversation_keeps_its_order(
    tmp_path, serve, chatra
):
    """Chatra answers the first reply with 429 and Retry-After: 2. Once the daemon has recorded
    that answer, no reply reaches Chatra within those 2 seconds (the limit is the account's, not
    one conversation's), and each visitor's replies arrive once each, in the order of their
    messages."""
    retry_after = 2
    server = serve(write_setup(tmp_path, REPLY_RULES, chatra=chatra))
    chatra.rate_limit(retry_after=retry_after)
    assert httpx.post(server.webhook_url, content=chat_started(1, "first")).status_code == 200
    wait_for(lambda: [job.attempts for job in read(tmp_path, lambda s: s.jobs())] == [1])
    bodies = [chat_fragment(1, 1), chat_started(2, "other"), chat_fragment(1, 2)]
    bodies += [chat_fragment(2, 1)]
    for body in bodies:
        assert httpx.post(server.webhook_url, content=body).status_code == 200
    wait_for(lambda: len(chatra.sent) == len(bodies) + 2, timeout=30)

    calls = [r for r in chatra.requests if r.method == "POST"]
    refused = calls[0]
    assert refused.json["text"] == "first"
    for call in calls[1:]:
        assert call.at - refused.at >= retry_after - TIMER_RESOLUTION, (call.json, call.at)
    texts: dict[str, list[str]] = {}
    for call in calls[1:]:
        texts.setdefault(call.json["clientId"], []).append(call.json["text"])
    assert texts == {
        "client00000001": ["first", "message 1", "message 2"],
        "client00000002": ["other", "message 1"],
    }


@pytest.mark.slow
def test_what_a_crash_would_repeat_is_on_disk_and_at_most_the_concurrency(tmp_path, serve, chatra):
    """Forty replies are claimed at once (none was claimed while they were processed) and
    their outcomes are slow to record. Copies of the database taken at any moment (what a
    kill -9 would leave) show every call that already reached Chatra either recorded done or
    recorded as started — never a call that left unrecorded — and at most
    ``dispatcher.concurrency`` started calls without an outcome."""
    concurrency = 3
    config = write_setup(tmp_path, chatra=chatra, dispatcher={"concurrency": concurrency})
    store = FaultyStore(tmp_path / "rulekit.sqlite3", slow={"record_attempt": 0.2})
    store.nothing.add("claim_jobs")  # no claims until every webhook is processed
    try:
        server = serve(config, store=store)
        visitors = 40
        for n in range(visitors):
            assert httpx.post(server.webhook_url, content=chat_started(n)).status_code == 200
        wait_for(lambda: len(read(tmp_path, lambda s: s.jobs())) == visitors, timeout=60)
        store.nothing.clear()
        server.call(_wake(server))
        snapshots, done = 0, set()
        while len(done) < visitors:
            reached = {message["clientId"] for message in chatra.sent}
            done, started = _on_disk(tmp_path / "rulekit.sqlite3")
            assert reached - done <= started, "a call left the process with nothing on disk"
            assert len(started) <= concurrency
            snapshots += 1
        assert snapshots > 5
        server.stop()
    finally:
        store.close()
    assert sorted(m["clientId"] for m in chatra.sent) == [f"client{n:08d}" for n in range(40)]


SLACK_EACH_OWN_CHANNEL = """\
- name: Tell Slack
  on: {channel: online-chat, event: created}
  do:
    - slack: {channel: "#{{ client.id }}", text: "New chat from {{ client.display_name }}"}
"""


@pytest.mark.slow
def test_calls_that_may_go_at_once_start_in_their_claim_within_the_bound(tmp_path, serve):
    """Forty Slack posts, each to a channel of its own, are claimed at once and their outcomes
    are slow to record: nothing lies between their claim and their call, so the claim records
    the start of as many as there are free slots (no store call of its own for them), the
    others start when a slot frees. A copy of the database taken at any moment shows every
    post that reached Slack recorded done or started, and at most ``dispatcher.concurrency``
    started posts without an outcome. Then posts come one at a time: each is started by its
    claim."""
    concurrency = 3
    with FakeSlack() as slack:
        rules = SLACK_EACH_OWN_CHANNEL
        config = write_setup(tmp_path, rules, slack=slack, dispatcher={"concurrency": concurrency})
        store = FaultyStore(tmp_path / "rulekit.sqlite3", slow={"record_attempt": 0.2})
        store.nothing.add("claim_jobs")  # no claims until every webhook is processed
        try:
            server = serve(config, store=store)
            visitors = 40
            for n in range(visitors):
                assert httpx.post(server.webhook_url, content=chat_started(n)).status_code == 200
            wait_for(lambda: len(read(tmp_path, lambda s: s.jobs())) == visitors, timeout=60)
            store.nothing.clear()
            server.call(_wake(server))
            done: set[str] = set()
            while len(done) < visitors:
                reached = {message.channel.lstrip("#") for message in slack.messages()}
                done, started = _on_disk(tmp_path / "rulekit.sqlite3")
                assert reached - done <= started, "a call left the process with nothing on disk"
                assert len(started) <= concurrency
            assert store.asked["begin_call"] == visitors - concurrency
            assert store.asked["start_call"] == concurrency
            more = 5
            for n in range(visitors, visitors + more):
                assert httpx.post(server.webhook_url, content=chat_started(n)).status_code == 200
                wait_for(
                    lambda n=n: (
                        _on_disk(tmp_path / "rulekit.sqlite3")[0]
                        == set(f"client{k:08d}" for k in range(n + 1))
                    ),
                    timeout=30,
                )
            assert store.asked["begin_call"] == visitors - concurrency
            assert store.asked["start_call"] == concurrency + more
            server.stop()
        finally:
            store.close()
    channels = [f"#client{n:08d}" for n in range(visitors + more)]
    assert sorted(m.channel for m in slack.messages()) == channels


SLACK_BY_TEXT = """\
- name: Tell Slack
  on: {channel: online-chat, event: created}
  do:
    - slack: {channel: "#{{ message.text }}", text: "{{ message.text }}"}
"""


@pytest.mark.slow
def test_a_call_started_by_its_claim_that_must_wait_withdraws_its_start(tmp_path, serve):
    """Slack limits two channels at once: the whole app is paused for its Retry-After. A post
    to a third channel, claimed meanwhile, would have gone at once as far as its channel goes,
    so its claim recorded its start; it has to wait for the app's pause after all, so its start
    is withdrawn before it waits (a crash meanwhile repeats nothing, and it holds no slot), and
    it is sent once, after the pause."""
    pause = 5
    with FakeSlack() as slack:
        config = write_setup(tmp_path, SLACK_BY_TEXT, slack=slack)
        store = FaultyStore(tmp_path / "rulekit.sqlite3")
        try:
            server = serve(config, store=store)
            slack.rate_limit(retry_after=pause, channel="#a")
            slack.rate_limit(retry_after=pause, channel="#b")
            for n, channel in enumerate(["a", "b"]):
                assert httpx.post(server.webhook_url, content=chat_started(n, channel)).is_success

            def retries() -> list[int]:
                return [job.attempts for job in read(tmp_path, lambda s: s.jobs())]

            wait_for(lambda: retries() == [1, 1], timeout=30)
            paused_at = time.monotonic()
            assert httpx.post(server.webhook_url, content=chat_started(2, "c")).is_success

            def third() -> Any:
                jobs = read(tmp_path, lambda s: s.jobs())
                return jobs[2] if len(jobs) == 3 and jobs[2].claimed_by else None

            wait_for(third, timeout=30)
            while time.monotonic() < paused_at + pause / 2:  # well within the pause
                assert third().call_started_at is None
                assert slack.messages("#c") == []
            wait_for(lambda: slack.messages("#c", accepted=True), timeout=30)
            wait_for(lambda: len(read(tmp_path, lambda s: s.jobs(status="done"))) == 3)
            assert store.asked["cancel_call"] == 1
            assert [m.status for m in slack.messages("#c")] == [200]
            server.stop()
        finally:
            store.close()


def _on_disk(path: Any) -> tuple[set[str], set[str]]:
    """What a crash now would leave: the visitors whose reply is recorded done, and those whose
    reply call is recorded started and not finished."""
    source, copy = sqlite3.connect(path), sqlite3.connect(":memory:")
    try:
        source.backup(copy)
        rows = copy.execute(
            "SELECT e.data, o.status, o.call_started_at FROM outbox o"
            " JOIN events e ON e.event_id = o.event_id"
        ).fetchall()
    finally:
        source.close()
        copy.close()
    done = {json.loads(data)["client"]["id"] for data, status, _ in rows if status == "done"}
    started = {
        json.loads(data)["client"]["id"]
        for data, status, call in rows
        if status == "pending" and call is not None
    }
    return done, started


async def _wake(server: Any) -> None:
    server.daemon.dispatcher.wake()


def test_a_blip_while_processing_retakes_the_claimed_webhooks_at_once(tmp_path, serve, chatra):
    """The store fails while a round of webhooks is being prepared: the daemon still holds
    their claims, so its next round processes them (one claim each) instead of leaving them
    until their claim runs out and claiming them again."""
    config = write_setup(tmp_path, REPLY_RULES, chatra=chatra)
    failures = {"cooldowns_for": 1}
    store = FaultyStore(tmp_path / "rulekit.sqlite3", failures)
    try:
        server = serve(config, store=store)
        assert httpx.post(server.webhook_url, content=chat_started(1, "hi")).status_code == 200
        wait_for(lambda: read(tmp_path, lambda s: s.inbox_items(status="done")))
        assert failures == {"cooldowns_for": 0}  # the blip happened
        [item] = read(tmp_path, lambda s: s.inbox_items())
        assert item.attempts == 1  # taken again under its first claim
        wait_for(lambda: [m["text"] for m in chatra.sent] == ["hi"])
        server.stop()
    finally:
        store.close()


NOTE_THEN_REPLY_RULES = """\
- name: Note
  on: {channel: online-chat, event: created}
  if: [client.id == 'client00000001']
  do:
    - update_client: {notes: "came through the chat"}
- name: Echo
  on: {channel: online-chat, event: created}
  if: [client.id == 'client00000002']
  do:
    - autoreply: {text: "{{ message.text }}"}
"""


@pytest.mark.parametrize("refused", ["PUT", "POST"])
def test_a_chatra_retry_after_holds_back_client_updates_and_replies_alike(
    tmp_path, serve, chatra, refused
):
    """Chatra's limit is the account's, whatever the endpoint: a 429 met by a change of client
    data (``PUT /clients/{id}``) holds back the replies, and one met by a reply holds back the
    changes of client data, for the Retry-After the service gave; each call then arrives once."""
    retry_after = 2
    for n in (1, 2):
        chatra.add_client(f"client{n:08d}", name=f"Visitor {n}")
    server = serve(write_setup(tmp_path, NOTE_THEN_REPLY_RULES, chatra=chatra))
    first, second = chat_started(1), chat_started(2, "hi")
    if refused == "POST":
        first, second = second, first
    chatra.rate_limit(retry_after=retry_after)
    assert httpx.post(server.webhook_url, content=first).status_code == 200
    wait_for(lambda: [job.attempts for job in read(tmp_path, lambda s: s.jobs())] == [1])
    assert httpx.post(server.webhook_url, content=second).status_code == 200
    wait_for(lambda: len(read(tmp_path, lambda s: s.jobs(status="done"))) == 2, timeout=30)

    calls = [r for r in chatra.requests if r.method in ("PUT", "POST")]
    assert calls[0].method == refused
    assert sorted(call.method for call in calls[1:]) == ["POST", "PUT"]
    for call in calls[1:]:
        assert call.at - calls[0].at >= retry_after - TIMER_RESOLUTION, (call.method, call.at)
