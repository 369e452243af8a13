"""Nothing one event does stops the others: evaluation runs in a worker process, outside any
store transaction, within a CPU and a wall budget per event; /healthz tells a stalled daemon.

The slow rules come from a real plugin (installed on ``PYTHONPATH`` with an entry point) whose
filters burn CPU (``spin``) or sleep (``hang``), as a runaway template or a pathological
regular expression would.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from daemons import (
    AUTOREPLY_RULES,
    Process,
    chat_fragment,
    chat_started,
    install_plugin,
    wait_for,
    write_setup,
)

from rulekit.channels.base import Provider
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.planning import Prepared, prepare, record
from rulekit.runtime.worker import Evaluation, Limits, Refusal
from rulekit.snapshot import load_snapshot
from rulekit.store.recording import StateChanged
from rulekit.store.sqlite import SQLiteStore

PLUGIN = """\
import time

from rulekit import hookimpl


def spin(value, seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return value


def hang(value, seconds):
    time.sleep(seconds)
    return value


@hookimpl
def rulekit_template_environment(register):
    register.filter("spin", spin)
    register.filter("hang", hang)
"""

RULES = """\
- name: Slow
  on: {channel: online-chat, event: created}
  if: ["message.text != 'slow' or (message.text | spin(120))"]
  do:
    - play_sound: {sound: bell}
- name: Hung
  on: {channel: online-chat, event: created}
  if: ["message.text != 'hang' or (message.text | hang(120))"]
  do:
    - play_sound: {sound: bell}
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello {{ client.display_name }}"}
"""


@pytest.fixture
def slow_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A plugin distribution with the ``spin`` and ``hang`` filters, on ``PYTHONPATH``."""
    return install_plugin(tmp_path, monkeypatch, "rulekit_slow_rules", PLUGIN, here=False)


def _setup(folder: Path, chatra, processing: str, server: str = "") -> Path:
    extra = f"processing: {processing}\n"
    if server:
        extra += f"server: {server}\n"
    return write_setup(folder, RULES, chatra=chatra, extra=extra)


def _inbox(folder: Path) -> dict[int, tuple[str, str | None]]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        rows = conn.execute("SELECT id, status, error FROM inbox").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def test_webhooks_are_answered_while_a_rule_burns_cpu_and_the_event_is_set_aside(
    tmp_path, processes, chatra, slow_plugin
):
    config = _setup(tmp_path, chatra, "{event_cpu: 0.5s, event_wall: 300s}")
    process: Process = processes(config).wait_ready()
    assert httpx.post(process.webhook_url, content=chat_started(1, "slow")).status_code == 200
    # the rule spins for 120 s of CPU; every other webhook is answered meanwhile (before, the
    # store's write lock and the GIL were held for as long as the rule ran)
    for n in range(2, 6):
        answer = httpx.post(process.webhook_url, content=chat_started(n), timeout=20)
        assert answer.status_code == 200
    wait_for(lambda: len(chatra.sent) == 4, timeout=60)
    assert sorted(m["text"] for m in chatra.sent) == [f"Hello Visitor {n}" for n in range(2, 6)]
    status, error = _inbox(tmp_path)[1]
    assert status == "failed"
    assert "CPU budget" in error and "processing.event_cpu" in error
    assert httpx.get(f"{process.url}/healthz").status_code == 200


@pytest.mark.slow
def test_an_evaluation_over_its_time_budget_is_stopped_and_the_next_item_goes_on(
    tmp_path, processes, chatra, slow_plugin
):
    config = _setup(tmp_path, chatra, "{event_cpu: 300s, event_wall: 1s}")
    process: Process = processes(config).wait_ready()
    assert httpx.post(process.webhook_url, content=chat_started(1, "hang")).status_code == 200
    assert httpx.post(process.webhook_url, content=chat_started(2)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=60)
    assert chatra.sent[0]["text"] == "Hello Visitor 2"
    status, error = _inbox(tmp_path)[1]
    assert status == "failed"
    assert "time budget" in error and "processing.event_wall" in error
    # the replaced worker evaluates the next ones
    assert httpx.post(process.webhook_url, content=chat_started(3)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 2, timeout=60)


def test_sigterm_during_a_hung_evaluation_exits_at_once_and_keeps_the_item(
    tmp_path, processes, chatra, slow_plugin
):
    config = _setup(tmp_path, chatra, "{event_cpu: 300s, event_wall: 300s}")
    process: Process = processes(config).wait_ready()
    assert httpx.post(process.webhook_url, content=chat_started(1, "hang")).status_code == 200
    wait_for(lambda: "inbox" in _tables(tmp_path) and 1 in _inbox(tmp_path))
    # the evaluation would go on for 120 s; the daemon stops without waiting for it
    assert process.terminate(timeout=60) == 0
    status, error = _inbox(tmp_path)[1]
    assert status == "pending" and error is None  # processed again after a restart


HEAVY_MESSAGES = """\
- name: Heavy
  on: {channel: online-chat, event: message}
  if: ["message.text | {filter}"]
  do:
    - play_sound: {sound: bell}
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello {{ client.display_name }}"}
"""


def _many_messages(n: int, count: int) -> bytes:
    """Visitor ``n``'s ``count`` messages in one chatFragment body: ``count`` events."""
    body = json.loads(chat_fragment(n, 1))
    body["messages"] = [
        {**body["messages"][0], "id": f"msg{n:08d}-{k}", "text": f"message {k}"}
        for k in range(1, count + 1)
    ]
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("heavy", "processing", "budget"),
    [
        (
            "spin(0.2)",
            "{event_cpu: 0.5s, event_wall: 300s, webhook_cpu: 1s, webhook_wall: 300s}",
            "CPU budget (1 s for the events of its webhook together; processing.webhook_cpu)",
        ),
        (
            "hang(0.3)",
            "{event_cpu: 300s, event_wall: 300s, webhook_cpu: 300s, webhook_wall: 1s}",
            "time budget (1 s for the events of its webhook together; processing.webhook_wall)",
        ),
    ],
)
def test_one_webhook_of_many_events_holds_the_worker_within_its_own_budget(
    tmp_path, processes, chatra, slow_plugin, heavy, processing, budget
):
    """Each of the body's 40 events is within its own budget, but together they would hold
    the only worker, and every webhook behind them, for 40 times as long: the webhook's budget
    sets the item aside, and the next webhook is evaluated."""
    rules = HEAVY_MESSAGES.replace("{filter}", heavy)
    config = write_setup(tmp_path, rules, chatra=chatra, extra=f"processing: {processing}\n")
    process: Process = processes(config).wait_ready()
    assert httpx.post(process.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=60)
    assert httpx.post(process.webhook_url, content=_many_messages(1, 40)).status_code == 200
    assert httpx.post(process.webhook_url, content=chat_started(2)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 2, timeout=60)
    assert chatra.sent[1]["text"] == "Hello Visitor 2"
    status, error = _inbox(tmp_path)[2]
    assert status == "failed"
    assert error is not None and error.endswith(f"took more than its {budget}")


def _tables(folder: Path) -> set[str]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


def test_healthz_fails_while_the_processor_makes_no_progress(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra, extra="server: {stall_after: 1s}\n")
    server = serve(config)
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
    held = threading.Event()
    release = threading.Event()

    def hold_the_store() -> None:
        with server.daemon.store.transaction():
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold_the_store)
    holder.start()
    try:
        held.wait(10)
        answer = wait_for(
            lambda: (r := httpx.get(f"{server.url}/healthz")).status_code == 503 and r, timeout=30
        )
        assert any("processor" in reason for reason in answer.json()["stalled"])
    finally:
        release.set()
        holder.join(10)
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, timeout=30)


@pytest.mark.slow
def test_an_idle_daemon_is_healthy_whatever_stall_after_says(tmp_path, serve, chatra):
    """No progress is expected while no work waits: an idle daemon polls its inbox about once
    a second, and a ``stall_after`` shorter than that does not make it unhealthy."""
    config = write_setup(tmp_path, chatra=chatra, extra="server: {stall_after: 0.5s}\n")
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=30)
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, timeout=30)
    answers = []
    for _ in range(30):  # three idle polls of the inbox and of the outbox
        answers.append(httpx.get(f"{server.url}/healthz").json()["stalled"])
        time.sleep(0.1)
    assert answers == [[]] * 30


@pytest.mark.slow
def test_healthz_fails_while_the_dispatcher_makes_no_progress_with_jobs_waiting(
    tmp_path, serve, chatra
):
    """A send that hangs (within the action's timeout) holds the dispatcher: /healthz says so
    once ``stall_after`` has passed, and is healthy again when the send is answered. The
    processor, idle meanwhile, is not stalled."""
    config = write_setup(
        tmp_path, AUTOREPLY_RULES, chatra=chatra, extra="server: {stall_after: 1s}\n"
    )
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=30)  # the worker is warm
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, timeout=30)
    chatra.hang(8)  # the next reply is answered after 8 s (the action's timeout is 10 s)
    assert httpx.post(server.webhook_url, content=chat_started(2)).status_code == 200

    def stalled() -> list[str]:
        answer = httpx.get(f"{server.url}/healthz")
        reasons: list[str] = answer.json()["stalled"]
        assert (answer.status_code == 503) == bool(reasons)
        return reasons

    dispatcher = "the dispatcher made no progress for 1 s with jobs waiting"
    wait_for(lambda: stalled() == [dispatcher], timeout=30)
    # the processor has nothing to do meanwhile: idle is not stalled
    for _ in range(5):
        assert stalled() in ([dispatcher], [])
        time.sleep(0.2)
    wait_for(lambda: len(chatra.sent) == 2, timeout=30)
    wait_for(lambda: stalled() == [], timeout=30)


def test_workers_evaluate_the_rules_the_daemon_loaded_not_what_the_disk_holds_now(
    tmp_path, serve, chatra
):
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    (tmp_path / "rules.d" / "rules.yaml").write_text("- name: [broken\n")
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=30)
    assert chatra.sent[0]["text"] == "Hello Visitor 1"


@dataclass
class Planning:
    """A loaded snapshot, its Chatra provider, a SQLite store and evaluation workers."""

    provider: Provider
    store: SQLiteStore
    evaluator: Evaluator

    def prepare(self, n: int) -> Prepared:
        """Chatra's chat-started webhook of visitor ``n``, normalized (rolled back)."""
        return prepare(self.store, lambda state: self.provider.parse(chat_started(n), state))


@contextlib.contextmanager
def planning(folder: Path, chatra, rules: str = AUTOREPLY_RULES, workers: int = 1):
    config = write_setup(folder, rules, chatra=chatra)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60), workers=workers)
    evaluator.want(snapshot)
    store = SQLiteStore(folder / "state.sqlite3")
    try:
        yield Planning(snapshot.providers["online-chat"], store, evaluator)
    finally:
        evaluator.close()
        store.close()


def test_several_workers_evaluate_at_once(tmp_path, chatra):
    answers: list[list[Evaluation] | Refusal] = []
    with planning(tmp_path, chatra, workers=2) as setup:
        requests = [setup.prepare(n).request for n in (1, 2)]
        threads = [
            threading.Thread(target=lambda r=r: answers.append(setup.evaluator.evaluate(r)))
            for r in requests
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert setup.evaluator.restarts == 2  # two worker processes served them
    assert len(answers) == 2
    for answer in answers:
        assert not isinstance(answer, Refusal)
        assert [job.action for job in answer[0].jobs] == ["autoreply"]


def test_a_plan_is_not_recorded_when_the_state_it_was_derived_from_changed(tmp_path, chatra):
    with planning(tmp_path, chatra) as setup:
        store = setup.store
        prepared = setup.prepare(1)
        answer = setup.evaluator.evaluate(prepared.request)
        # meanwhile, the same webhook was normalized and committed (another daemon)
        with store.transaction() as state:
            setup.provider.parse(chat_started(1), state)
        with pytest.raises(StateChanged), store.transaction() as state:
            record(state, prepared, answer, inbox_id=None)
        # started over, it is recorded against the state as it is now
        prepared = setup.prepare(1)
        answer = setup.evaluator.evaluate(prepared.request)
        with store.transaction() as state:
            processed = record(state, prepared, answer, inbox_id=None)
        assert [p.event.event for p in processed] == []  # the message was seen: no new event


def test_a_cooldown_set_meanwhile_invalidates_the_plan(tmp_path, chatra):
    rules = textwrap.dedent(
        """\
        - name: Greet once
          on: {channel: online-chat, event: created}
          cooldown: 1h
          do:
            - autoreply: {text: "Hello"}
        """
    )
    with planning(tmp_path, chatra, rules) as setup:
        prepared = setup.prepare(1)
        answer = setup.evaluator.evaluate(prepared.request)
        assert isinstance(answer, list) and answer[0].cooldowns_read
        event = prepared.events[0]
        with setup.store.transaction() as state:
            state.set_cooldown("Greet once", event.conversation.id, event.occurred_at)
        with pytest.raises(StateChanged), setup.store.transaction() as state:
            record(state, prepared, answer, inbox_id=None)


@pytest.mark.slow
def test_requests_evaluated_together_keep_their_own_budgets(
    tmp_path, chatra, slow_plugin, monkeypatch
):
    monkeypatch.syspath_prepend(str(slow_plugin))  # the daemon's side loads the plugin too
    config = _setup(tmp_path, chatra, "{event_cpu: 0.5s, event_wall: 2s}")
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_cpu=0.5, event_wall=2))
    evaluator.want(snapshot)
    store = SQLiteStore(tmp_path / "state.sqlite3")
    provider = snapshot.providers["online-chat"]

    def request(n: int, text: str = "Hello?"):
        body = chat_started(n, text)
        return prepare(store, lambda state: provider.parse(body, state)).request

    try:
        # one over its CPU budget: refused on its own, the others answered in the same exchange
        answers = evaluator.evaluate_many([request(1), request(2, "slow"), request(3)])
        assert isinstance(answers[1], Refusal) and "CPU budget" in answers[1].reason
        for answer in (answers[0], answers[2]):
            assert not isinstance(answer, Refusal)
            assert "Greet" in [job.rule for job in answer[0].jobs]
        # one that hangs runs the exchange out of time: each is asked again on its own, and
        # only the one that hangs is refused
        answers = evaluator.evaluate_many([request(4), request(5, "hang")])
        assert not isinstance(answers[0], Refusal)
        assert isinstance(answers[1], Refusal) and "time budget" in answers[1].reason
    finally:
        evaluator.close()
        store.close()


@pytest.mark.slow
def test_calls_waiting_out_a_service_wide_retry_after_are_not_a_stall(tmp_path, serve, chatra):
    """Chatra answers a reply 429 with a Retry-After longer than ``stall_after``: the whole
    account is paused, the refused reply waits to be retried and another conversation's reply
    waits for the pause to end. The dispatcher is doing what the service asked, not stalled:
    /healthz stays healthy (a liveness probe would restart a daemon for obeying a rate limit)
    while both replies wait, and both are sent once the pause is over."""
    config = write_setup(
        tmp_path, AUTOREPLY_RULES, chatra=chatra, extra="server: {stall_after: 1s}\n"
    )
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=30)  # the worker is warm
    chatra.rate_limit(retry_after=6)
    assert httpx.post(server.webhook_url, content=chat_started(2)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 2, timeout=30)  # refused: the account is paused
    assert httpx.post(server.webhook_url, content=chat_started(3)).status_code == 200
    answers = []
    deadline = time.monotonic() + 60  # a liveness bound: the pause is 6 s
    while len(chatra.sent) < 4:
        assert time.monotonic() < deadline, chatra.sent
        answers.append(httpx.get(f"{server.url}/healthz").json()["stalled"])
        time.sleep(0.2)
    # (on a busy machine the processor may take a second for an item: only the dispatcher's
    # state is in question here)
    assert not [reason for reasons in answers for reason in reasons if "dispatcher" in reason]
    assert sorted(body["clientId"] for body in chatra.sent[2:]) == [
        "client00000002",
        "client00000003",
    ]


def test_a_shutdown_does_not_wait_for_calls_waiting_their_turn(tmp_path, serve, chatra):
    """Chatra pauses the account for an hour: one reply waits to be retried, another waits for
    the pause to end. Neither call is under way, so stopping the dispatcher, however long the
    grace it gives calls in flight, does not wait for them; their jobs stay pending, claims
    handed back, and nothing was sent into the pause."""
    server = serve(write_setup(tmp_path, AUTOREPLY_RULES, chatra=chatra))
    chatra.rate_limit(retry_after=3600)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1, timeout=30)  # refused: the account is paused
    assert httpx.post(server.webhook_url, content=chat_started(2)).status_code == 200
    dispatcher = server.daemon.dispatcher
    assert dispatcher is not None
    wait_for(lambda: dispatcher.held == 2, timeout=30)
    server.call(dispatcher.stop(grace=3600), timeout=30)
    with server.daemon.store.transaction() as state:
        jobs = state.jobs(status="pending")
    jobs.sort(key=lambda job: job.id)
    assert [(job.attempts, job.claimed_by) for job in jobs] == [(1, None), (0, None)]
    assert len(chatra.sent) == 1
