"""A failure after a call never makes the call again, and no lane of the dispatcher dies
silently: what fails unexpectedly is logged with its traceback and tried again, and /healthz
tells a lane that cannot make progress.

The evaluation worker is broken by a real plugin (installed on ``PYTHONPATH`` with an entry
point): its ``break_workers`` filter, once a rule uses it, kills the worker evaluating it and
leaves a mark that makes every worker started after it exit while loading the rules, so that
the evaluator cannot start one (:class:`~rulekit.runtime.evaluator.WorkerGone`).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import httpx
import pytest
from daemons import Process, chat_started, install_plugin, read, wait_for, write_setup

PLUGIN = """\
import os

from rulekit import hookimpl

MARK = os.environ["RULEKIT_TEST_BROKEN_WORKERS"]


def break_workers(value):
    open(MARK, "w").close()
    os._exit(3)


@hookimpl
def rulekit_template_environment(register):
    if os.path.exists(MARK):  # a worker started after the rule broke them cannot load
        os._exit(3)
    register.filter("break_workers", break_workers)
"""

ASSIGN_THEN_REPLY = """\
- name: Assign and greet
  on: {channel: online-chat, event: created}
  do:
    - assign: {group: support}
    - autoreply: {text: "Hi, {{ client.display_name }}"}
- name: Note assignments
  on: {channel: online-chat, event: assigned}
  allow_own_events: true
  if: ["conversation.id | break_workers"]
  do:
    - play_sound: {sound: bell, to: everyone}
"""


@pytest.fixture
def breaking_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin with ``break_workers`` on ``PYTHONPATH``; returns the mark it leaves."""
    install_plugin(tmp_path, monkeypatch, "rulekit_breaking_rules", PLUGIN, here=False)
    mark = tmp_path / "workers-broken"
    monkeypatch.setenv("RULEKIT_TEST_BROKEN_WORKERS", str(mark))
    return mark


def _attempts(folder: Path, action: str) -> list[tuple[str, str | None]]:
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        return conn.execute(
            "SELECT a.outcome, a.error FROM attempts a JOIN outbox o ON o.id = a.job_id"
            " WHERE o.action = ? ORDER BY a.id",
            (action,),
        ).fetchall()


def test_an_assign_whose_events_cannot_be_evaluated_is_recorded_and_never_made_again(
    tmp_path, processes, chatra, breaking_plugin
):
    """The worker cannot start while the ``assigned`` event of an assign is evaluated: the
    assign's outcome is recorded all the same, once: it is not made again after the job's
    lease (a round robin between two agents would pass the conversation on to the next one,
    again and again). Its events are recorded with the reason and no actions, the failure is
    logged with its traceback, and the lane goes on to the reply after the assign."""
    config = write_setup(tmp_path, ASSIGN_THEN_REPLY, chatra=chatra)
    config.write_text(
        config.read_text().replace(
            "agents:\n",
            "agents:\n  - {email: bob@example.com, groups: [support], channels: [online-chat]}\n",
        )
    )
    process: Process = processes(config, "--job-lease", "1").wait_ready()
    assert httpx.post(process.webhook_url, content=chat_started(1)).status_code == 200
    # the reply follows the assign in its lane: the assign's outcome is recorded by then
    wait_for(lambda: chatra.sent, timeout=30)
    assert breaking_plugin.exists()  # the worker was broken by the assign's event
    assert _attempts(tmp_path, "assign") == [("done", None)]
    (assigned,) = read(tmp_path, lambda state: state.history(event="assigned"))
    assert "not evaluated: WorkerGone" in str(assigned.trace)
    assert read(tmp_path, lambda state: state.jobs(event_id=assigned.event_id)) == []
    _, conversation = read(
        tmp_path, lambda state: state.find_conversation("online-chat", assigned.conversation_id)
    )
    assert conversation.assignee == assigned.data["conversation"]["assignee"]
    assert chatra.sent[0].get("agentEmail") == conversation.assignee
    assert len(chatra.sent) == 1
    output = process.output()
    assert "recorded unevaluated (WorkerGone)" in output
    assert "Traceback" in output and "WorkerGone" in output


def _logged(caplog: pytest.LogCaptureFixture, start: str) -> list[logging.LogRecord]:
    """The records logged so far whose message starts with ``start``."""
    return [r for r in list(caplog.records) if r.getMessage().startswith(start)]


def _healthz(server) -> tuple[int, list[str]]:
    answer = httpx.get(f"{server.url}/healthz")
    return answer.status_code, answer.json()["stalled"]


REFUSED_CLAIMS = (
    "CREATE TRIGGER refused BEFORE UPDATE OF claimed_by ON outbox"
    " WHEN NEW.claimed_by IS NOT NULL BEGIN SELECT RAISE(ABORT, 'refused'); END"
)
REFUSED_STARTS = (
    "CREATE TRIGGER refused BEFORE UPDATE OF call_started_at ON outbox"
    " WHEN NEW.call_started_at IS NOT NULL BEGIN SELECT RAISE(ABORT, 'refused'); END"
)
REFUSED_ATTEMPTS = (
    "CREATE TRIGGER refused BEFORE INSERT ON attempts BEGIN SELECT RAISE(ABORT, 'refused'); END"
)


@pytest.mark.parametrize(
    ("trigger", "logged", "sent_meanwhile"),
    [
        pytest.param(REFUSED_CLAIMS, "cannot claim jobs", 0, id="its claim"),
        pytest.param(REFUSED_STARTS, "lane ", 0, id="the call's start"),
        pytest.param(REFUSED_ATTEMPTS, "cannot record job", 1, id="the call's outcome"),
    ],
)
def test_a_job_the_store_refuses_to_write_is_logged_tells_healthz_and_goes_on(
    tmp_path, serve, chatra, caplog, trigger, logged, sent_meanwhile
):
    """The database refuses what the dispatcher writes for a job (a trigger aborts it: not an
    outage, an error of the database's own): its claim, or in its lane, before the call (its
    start) or after it (its outcome). Neither the dispatcher nor the lane dies silently with
    the job, whose claim would run out and the reply be sent again: the error is logged with
    its traceback and tried again after a pause, and /healthz tells the dispatcher is stalled
    meanwhile. Once the database takes it, the job goes on,
    and the reply is sent once (a call already made is not made again: its outcome is)."""
    caplog.set_level(logging.INFO)
    config = write_setup(tmp_path, chatra=chatra, extra="server: {stall_after: 1s}\n")
    server = serve(config, job_lease=1.0)
    wait_for(lambda: _healthz(server)[0] == 200, timeout=30)
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        conn.execute(trigger)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    # the refusal is logged first; a call or an evaluation slower than stall_after on a busy
    # machine is no progress either, so /healthz alone does not say the refusal happened
    failures = wait_for(lambda: _logged(caplog, logged), timeout=30)
    assert failures[0].exc_info is not None
    dispatcher = "the dispatcher made no progress for 1 s with jobs waiting"
    wait_for(lambda: _healthz(server) == (503, [dispatcher]), timeout=30)
    assert len(chatra.sent) == sent_meanwhile
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        conn.execute("DROP TRIGGER refused")
    wait_for(lambda: _attempts(tmp_path, "autoreply") == [("done", None)], timeout=60)
    wait_for(lambda: _healthz(server) == (200, []), timeout=30)
    assert len(chatra.sent) == 1


def test_a_processor_round_the_store_refuses_is_logged_tells_healthz_and_goes_on(
    tmp_path, serve, chatra, caplog
):
    """The database refuses to finish inbox items (a trigger aborts it), even to set one aside:
    the processor does not end with its task, it logs the error with its traceback and goes on
    after a pause, /healthz tells it is stalled meanwhile, and the item is processed once the
    database takes it."""
    caplog.set_level(logging.INFO)
    config = write_setup(tmp_path, chatra=chatra, extra="server: {stall_after: 1s}\n")
    server = serve(config)
    wait_for(lambda: _healthz(server)[0] == 200, timeout=30)
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        conn.execute(
            "CREATE TRIGGER refused BEFORE UPDATE OF status ON inbox"
            " WHEN NEW.status != 'pending' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    failures = wait_for(lambda: _logged(caplog, "cannot process the inbox: "), timeout=30)
    assert failures[0].exc_info is not None
    processor = "the processor made no progress for 1 s"
    wait_for(lambda: _healthz(server) == (503, [processor]), timeout=30)
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        conn.execute("DROP TRIGGER refused")
    wait_for(lambda: chatra.sent, timeout=60)
    wait_for(lambda: _healthz(server) == (200, []), timeout=30)
    assert len(chatra.sent) == 1
