"""``close_after`` on time: the Telegram provider asks the daemon for a durable timer
(:meth:`rulekit.channels.base.Provider.channel_timers`) at each activity of the user, and the
daemon closes the idle conversation when the timer falls due, not on the user's next update.
The daemon's timers run on the test's clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rulekit.channels import ChannelTimer
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.store.memory import MemoryStore
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import Updates
from telegram_daemon import RULES, Server, wait_for, write_setup
from telegram_samples import ANN, make_provider

GOODBYE = """\
- name: Say goodbye when a chat closes
  on: {channel: telegram, event: closed}
  do:
    - autoreply: {text: "Bye for now!"}
"""


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


class Clock:
    """The time the daemon's timers see."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def read(server: Server, function: Any) -> Any:
    with server.daemon.store.transaction() as state:
        return function(state)


def replies(telegram: FakeTelegram) -> list[str]:
    return [m.text for m in telegram.messages(ANN.id, accepted=True)]


@pytest.mark.slow
def test_an_idle_chat_is_closed_when_close_after_runs_out(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    config = write_setup(tmp_path, telegram)
    (tmp_path / "rules.d" / "rules.yaml").write_text(RULES + GOODBYE)
    updates = Updates()
    start = datetime.fromtimestamp(updates.date, UTC)
    clock = Clock(start)
    with Server(Daemon(config, watch=False, clock=clock)) as server:
        url = CliRunner().invoke(
            cli, ["telegram", "set-webhook", server.url, "--config", str(config)]
        )
        assert url.exit_code == 0, url.output

        first = updates.message(ANN, "Hi")
        assert telegram.write(first) == 200
        wait_for(lambda: replies(telegram) == ["Hello Ann Lee!"])
        (timer,) = read(server, lambda s: s.timers(conversation_id="telegram:111"))
        written = datetime.fromtimestamp(first["message"]["date"], UTC)
        assert (timer.rule, timer.status) == ("@telegram:close_after", "pending")
        assert timer.due == written + timedelta(minutes=30)  # the channel's default close_after

        # ten minutes later the user writes again: the same timer, moved
        updates.date += 600
        again = updates.message(ANN, "still there?")
        clock.now = datetime.fromtimestamp(again["message"]["date"], UTC)
        assert telegram.write(again) == 200
        wait_for(lambda: len(replies(telegram)) == 2)
        (timer,) = read(server, lambda s: s.timers(conversation_id="telegram:111"))
        moved = clock.now + timedelta(minutes=30)
        assert (timer.status, timer.due) == ("pending", moved)

        # the clock passes the due time: the daemon closes the chat, the rules say goodbye
        clock.now = moved + timedelta(seconds=1)
        server.call(server.daemon.timers.wake)  # type: ignore[union-attr]
        wait_for(lambda: replies(telegram)[-1:] == ["Bye for now!"])
        (timer,) = read(server, lambda s: s.timers(conversation_id="telegram:111"))
        closed_id = f"telegram:idle:111:{int((moved - timedelta(minutes=30)).timestamp())}"
        assert (timer.status, timer.by_event) == ("fired", closed_id)
        record = read(server, lambda s: s.get_event(closed_id))
        assert record.event == "closed" and record.occurred_at == moved
        conversation = read(server, lambda s: s.get_conversation("telegram", "111"))
        assert conversation.status == "closed"

        # the next message reopens it; the close is not derived (nor said) a second time
        updates.date = int((moved + timedelta(hours=1)).timestamp())
        clock.now = moved + timedelta(hours=1)
        back = updates.message(ANN, "back")
        assert telegram.write(back) == 200
        wait_for(lambda: len(replies(telegram)) == 4)
        assert replies(telegram) == [
            "Hello Ann Lee!",
            "Got text: still there?",
            "Bye for now!",
            "Hello Ann Lee!",
        ]
        events = read(server, lambda s: s.history(channel="telegram", limit=20))
        assert [e.event for e in reversed(events)] == ["created", "message", "closed", "reopened"]
        (pending,) = [
            t
            for t in read(server, lambda s: s.timers(conversation_id="telegram:111"))
            if t.status == "pending"
        ]
        assert pending.due == datetime.fromtimestamp(back["message"]["date"], UTC) + timedelta(
            minutes=30
        )


@pytest.mark.slow
def test_an_update_delivered_late_does_not_close_the_chat_before_its_last_message(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Telegram's webhooks may arrive out of order (several connections at once, a delivery
    retried after a 503). A message written five minutes before the user's last, delivered
    after it, set their last visit, and the idle timer, back to its own time: the chat was
    closed (and the goodbye sent) while the user had written less than ``close_after`` ago,
    and their next message was a ``reopened``."""
    config = write_setup(tmp_path, telegram)
    (tmp_path / "rules.d" / "rules.yaml").write_text(GOODBYE)
    updates = Updates()
    clock = Clock(datetime.fromtimestamp(updates.date, UTC))
    with Server(Daemon(config, watch=False, clock=clock)) as server:
        url = CliRunner().invoke(
            cli, ["telegram", "set-webhook", server.url, "--config", str(config)]
        )
        assert url.exit_code == 0, url.output
        first = updates.message(ANN, "Hi")
        updates.date += 300
        late = updates.message(ANN, "written second, delivered last")
        updates.date += 300
        last = updates.message(ANN, "written last")
        written = datetime.fromtimestamp(last["message"]["date"], UTC)
        clock.now = written
        for update in (first, last, late):
            assert telegram.write(update) == 200

        def recorded() -> list[str]:
            events = read(server, lambda s: s.history(channel="telegram", limit=20))
            return [e.event for e in reversed(events)]

        wait_for(lambda: len(recorded()) == 3)
        client = read(server, lambda s: s.get_client("telegram", str(ANN.id)))
        assert client.last_visit == written
        (timer,) = read(server, lambda s: s.timers(conversation_id="telegram:111"))
        assert timer.due == written + timedelta(minutes=30)

        # past close_after from the late message, not from the last: the chat stays open
        clock.now = written + timedelta(minutes=29)
        server.call(server.daemon.timers.wake)  # type: ignore[union-attr]
        updates.date = int(clock.now.timestamp())
        assert telegram.write(updates.message(ANN, "still here")) == 200
        wait_for(lambda: len(recorded()) >= 4)
        assert recorded() == ["created", "message", "message", "message"]
        assert replies(telegram) == []


def test_a_message_read_after_a_later_one_moves_no_time_back() -> None:
    """Neither the client's last visit nor the idle timer goes back for a message written
    before the user's last one and read after it."""
    provider = make_provider(close_after="30m")
    store = MemoryStore()
    updates = Updates()
    first = updates.message(ANN, "Hi")
    updates.date += 300
    late = updates.message(ANN, "written second, read last")
    updates.date += 300
    last = updates.message(ANN, "written last")
    written = datetime.fromtimestamp(last["message"]["date"], UTC)
    events = []
    for update in (first, last, late):
        with store.transaction() as state:
            events += provider.parse(_body(update), state)
    assert [e.event for e in events] == ["created", "message", "message"]
    assert events[-1].client.last_visit == written
    (timer,) = provider.channel_timers(events[-1])
    assert timer.due == written + timedelta(minutes=30)
    with store.transaction() as state:
        assert state.get_client("telegram", str(ANN.id)).last_visit == written
        early = ChannelTimer(timer.name, timer.conversation_id, timer.due - timedelta(minutes=5))
        assert provider.timer_due(early, state) == []


def test_a_due_timer_closes_only_a_conversation_still_idle() -> None:
    provider = make_provider(close_after="30m")
    store = MemoryStore()
    updates = Updates()
    with store.transaction() as state:
        (created,) = provider.parse(_body(updates.message(ANN, "Hi")), state)
    (timer,) = provider.channel_timers(created)
    assert timer == ChannelTimer(
        "close_after", "telegram:111", created.occurred_at + timedelta(minutes=30)
    )
    with store.transaction() as state:
        # a message since: the timer set before it finds the chat active
        updates.date += 60
        provider.parse(_body(updates.message(ANN, "more")), state)
        assert provider.timer_due(timer, state) == []
        later = ChannelTimer(
            "close_after", timer.conversation_id, timer.due + timedelta(seconds=61)
        )
        (closed,) = provider.timer_due(later, state)
        assert closed.event == "closed" and closed.id == f"telegram:idle:111:{updates.date}"
        assert provider.timer_due(later, state) == []  # closed already: nothing more
    # the next update derives no second close
    with store.transaction() as state:
        updates.date += 7200
        events = provider.parse(_body(updates.message(ANN, "back")), state)
    assert [e.event for e in events] == ["reopened"]


def test_a_chat_whose_client_was_forgotten_is_still_closed_when_idle() -> None:
    """``rulekit forget`` deletes the client's record, which said when they last wrote: the
    idle timer found nothing to compare and never closed the chat, which stayed open (their
    next message was no ``reopened``)."""
    provider = make_provider(close_after="30m")
    store = MemoryStore()
    updates = Updates()
    with store.transaction() as state:
        (created,) = provider.parse(_body(updates.message(ANN, "Hi")), state)
    (timer,) = provider.channel_timers(created)
    with store.transaction() as state:
        state.forget_client(str(ANN.id))
    with store.transaction() as state:
        (closed,) = provider.timer_due(timer, state)
        assert closed.event == "closed" and closed.occurred_at == timer.due
        assert closed.client.id == str(ANN.id) and closed.client.name is None
        assert closed.id == f"telegram:idle:111:{int(created.occurred_at.timestamp())}"
    with store.transaction() as state:
        updates.date += 7200
        events = provider.parse(_body(updates.message(ANN, "back")), state)
    assert [e.event for e in events] == ["reopened"]


def _body(update: dict[str, Any]) -> bytes:
    import json

    return json.dumps(update).encode()


def test_the_dry_run_closes_an_idle_chat_on_time_as_the_daemon_does(tmp_path: Path) -> None:
    """``rulekit test`` did not run the channel's timers: an idle chat was closed only on the
    user's next update, so a suite's ``advance:`` showed no ``closed`` and a timed rule that
    ``cancel_on: closed`` fired where the daemon had cancelled it."""
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "rules.yaml").write_text(
        GOODBYE + "- name: Follow up\n  on: {channel: telegram, event: created}\n  after: 2h\n"
        "  cancel_on: closed\n  do: [{autoreply: {text: Still there?}}]\n"
    )
    config = tmp_path / "rulekit.yaml"
    config.write_text(
        "channels:\n  telegram: {provider: telegram-bot, token: '1:x', close_after: 30m}\n"
    )
    first = tmp_path / "first.json"
    first.write_text(json.dumps(Updates().message(ANN, "hello")))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "tests:\n  - name: closed on time\n    channel: telegram\n"
        f"    inputs: [{{file: {first}}}, {{advance: 3h}}]\n"
        "    expect: [{rule: Say goodbye when a chat closes}]\n"
        "    expect_absent: [{rule: Follow up}]\n"
    )
    result = CliRunner().invoke(
        cli, ["test", "--config", str(config), "--rules", str(rules), str(suite)]
    )
    assert result.exit_code == 0, result.output
    assert "1 passed, 0 failed" in result.output
