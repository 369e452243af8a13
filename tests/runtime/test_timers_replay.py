"""``rulekit replay`` simulates timed rules like the dry run, on the recorded times: a store
filled by the daemon's own processor and timer runner (a real evaluation worker, a clock of the
test's), then replayed with the same and with candidate rules."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner
from daemons import chat_started, write_setup
from test_timers_daemon import REPLY

from rulekit.cli.main import cli
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.processor import Processor
from rulekit.runtime.timers import TimerRunner
from rulekit.runtime.worker import Limits
from rulekit.snapshot import load_snapshot
from rulekit.store.sqlite import SQLiteStore

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
TIMED = """\
- name: Nobody answered
  on: {channel: online-chat, event: created}
  after: 5m
  cancel_on: agent_replied
  do:
    - autoreply: {text: "Sorry for the wait, {{ client.display_name }}"}
"""


def at(body: bytes, when: datetime, path: tuple[str, ...] = ("message",)) -> bytes:
    data = json.loads(body)
    target = data
    for key in path:
        target = target[key]
    target["createdAt"] = int(when.timestamp() * 1000)
    return json.dumps(data).encode()


def agent_reply(n: int, when: datetime) -> bytes:
    body = json.loads(json.dumps(REPLY))
    client = {"id": f"client{n:08d}", "chatId": f"chat{n:08d}", "displayedName": f"Visitor {n}"}
    body["client"] = {**body["client"], **client}
    body["messages"][0]["id"] = f"reply{n:08d}"
    body["messages"][0]["createdAt"] = int(when.timestamp() * 1000)
    return json.dumps(body).encode()


@contextlib.contextmanager
def recorded_site(folder: Path, chatra) -> Iterator[Path]:
    """Visitor 1 is never answered (the timer fires at T0+5m); visitor 2 is answered after a
    minute (the reply cancels the timer)."""
    config = write_setup(folder, TIMED, chatra=chatra)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = SQLiteStore(folder / "rulekit.sqlite3")
    clock = [T0]
    try:
        processor = Processor(
            store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()
        )
        runner = TimerRunner(
            store, lambda: snapshot, evaluator, owner="test:1", now=lambda: clock[0]
        )
        provider = snapshot.providers["online-chat"]
        for body in (
            at(chat_started(1), T0),
            at(chat_started(2), T0 + timedelta(seconds=30)),
            agent_reply(2, T0 + timedelta(minutes=1)),
        ):
            with store.transaction() as state:
                key = provider.conversation_key(json.loads(body))
                state.append_inbox("online-chat", body, conversation_key=key)
            while processor.process_round(snapshot)[1]:
                pass
        clock[0] = T0 + timedelta(minutes=5, seconds=1)
        fired = runner.fire_due()
        assert [(f.timer.rule, f.outcome) for f in fired] == [("Nobody answered", "fired")]
        yield config
    finally:
        evaluator.close()
        store.close()


def replay(config: Path, rules: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["replay", "--rules", str(rules), "--config", str(config), *args]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_replaying_the_same_timed_rules_changes_nothing(tmp_path, chatra):
    with recorded_site(tmp_path, chatra) as config:
        out = replay(config, tmp_path / "rules.d", "--all")
        assert "4 event(s) replayed, 0 would change" in out, out
        assert "timer:1  created on online-chat\n  = 1 action(s), unchanged" in out, out
        data = json.loads(replay(config, tmp_path / "rules.d", "--format", "json"))
        assert data["summary"]["changed_events"] == 0 and data["summary"]["pending_timers"] == 0


def test_candidate_timed_rules_are_simulated_on_the_recorded_clock(tmp_path, chatra):
    with recorded_site(tmp_path, chatra) as config:
        candidate = tmp_path / "candidate"
        candidate.mkdir()
        # no cancel_on: visitor 2's timer is no longer cancelled by the reply
        (candidate / "rules.yaml").write_text(
            TIMED.replace("  cancel_on: agent_replied\n", "").replace(
                "Sorry for the wait", "Still with us"
            )
        )
        data = json.loads(replay(config, candidate, "--format", "json", "--all"))
        events = {e["event_id"]: e for e in data["events"]}
        (changed,) = events["timer:1"]["changed"]
        assert changed["params"]["text"] == {
            "then": "Sorry for the wait, Visitor 1",
            "now": "Still with us, Visitor 1",
        }
        # visitor 2's timer fires now, against the client as the reply recorded them
        (new,) = [e for e in data["events"] if e["event_id"].startswith("(timer of")]
        assert new["event_id"].startswith("(timer of 'Nobody answered' set by online-chat:")
        (added,) = new["added"]
        assert added["params"]["text"] == "Still with us, Visitor 2"
        assert data["summary"]["actions_added"] == 1 and data["summary"]["actions_changed"] == 1

        # a longer wait: visitor 2's timer (due at 10:30:30) is cancelled by the reply again,
        # visitor 1's fires at 10:30, not when the recorded one did (10:05)
        (candidate / "rules.yaml").write_text(TIMED.replace("after: 5m", "after: 30m"))
        out = replay(config, candidate)
        assert "0 would change" in out, out
