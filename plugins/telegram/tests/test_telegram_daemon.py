"""End to end through a real daemon: a user writes to the bot, Telegram posts the update to
the webhook that ``rulekit telegram set-webhook`` registered, the rules act, the reply reaches
the user through the fake Bot API."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from click.testing import CliRunner
from rulekit.cli.main import cli
from rulekit.server.daemon import Daemon
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.telegram_updates import TelegramUser, Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup
from telegram_samples import ANN, BORIS, SECRET

T = TypeVar("T")


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


@pytest.fixture
def server(tmp_path: Path, telegram: FakeTelegram) -> Iterator[Server]:
    config = write_setup(tmp_path, telegram)
    with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
        result = CliRunner().invoke(
            cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
        )
        assert result.exit_code == 0, result.output
        yield running


def journal(server: Server, read: Callable[[Any], T]) -> T:
    """What the daemon's store says (read in a transaction of its own)."""
    with server.daemon.store.transaction() as state:
        return read(state)


def replies(telegram: FakeTelegram, chat: int) -> list[str]:
    return [m.text for m in telegram.messages(chat, accepted=True)]


def test_set_webhook_registers_the_channel_s_url_and_secret(
    server: Server, telegram: FakeTelegram
) -> None:
    assert telegram.webhook is not None
    assert telegram.webhook["url"] == f"{server.url}/webhooks/telegram/{SECRET}"
    assert telegram.webhook["secret_token"] == SECRET
    assert telegram.webhook["allowed_updates"] == ["message", "edited_message"]


def test_a_user_s_messages_get_the_replies_the_rules_say(
    server: Server, telegram: FakeTelegram
) -> None:
    updates = Updates()
    assert telegram.write(updates.message(ANN, "Hi")) == 200
    assert telegram.write(updates.message(ANN, kind="photo", caption="broken")) == 200
    assert telegram.write(updates.message(BORIS, "Hello")) == 200
    wait_for(lambda: len(replies(telegram, 111)) == 2 and replies(telegram, 222))
    assert replies(telegram, 111) == ["Hello Ann Lee!", "Got photo: broken"]
    assert replies(telegram, 222) == ["Hello Boris!"]
    # /stop closes, the next message reopens and is greeted again
    assert telegram.write(updates.message(ANN, "/stop")) == 200
    assert telegram.write(updates.message(ANN, "back")) == 200
    wait_for(lambda: len(replies(telegram, 111)) == 3)
    assert replies(telegram, 111)[2] == "Hello Ann Lee!"
    events = [r.event for r in journal(server, lambda s: s.history(channel="telegram", limit=20))]
    assert sorted(events) == sorted(["created", "message", "created", "closed", "reopened"])


def test_replies_in_one_chat_keep_telegram_s_pace(server: Server, telegram: FakeTelegram) -> None:
    updates = Updates()
    for text in ("one", "two", "three"):
        assert telegram.write(updates.message(ANN, text)) == 200
    wait_for(lambda: len(replies(telegram, 111)) == 3)
    sent = telegram.messages(111, accepted=True)
    assert [m.text for m in sent] == ["Hello Ann Lee!", "Got text: two", "Got text: three"]
    gaps = [b.at - a.at for a, b in itertools.pairwise(sent)]
    # one message a second per chat: each call starts after the previous one's answer
    # plus the limit's second (the fake records arrivals; 50 ms for scheduling)
    assert all(gap >= 0.95 for gap in gaps), gaps


def test_a_redelivered_update_is_answered_once(server: Server, telegram: FakeTelegram) -> None:
    update = Updates().message(ANN, "Hi")
    assert telegram.write(update) == 200
    assert telegram.deliver(update) == 200  # Telegram retries a delivery it thinks failed
    wait_for(lambda: replies(telegram, 111))
    wait_for(lambda: not journal(server, lambda s: s.jobs(status="pending")))
    assert replies(telegram, 111) == ["Hello Ann Lee!"]


def test_a_name_changed_back_fires_the_client_updated_rules_again(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    config = write_setup(tmp_path, telegram)
    (tmp_path / "rules.d" / "rules.yaml").write_text(
        "- name: Renamed\n"
        "  on: {channel: telegram, event: client_updated}\n"
        "  do: [{autoreply: {text: 'Now {{ client.name }}'}}]\n"
    )
    with Server(Daemon(config, watch=False, clock=samples_clock)) as running:
        result = CliRunner().invoke(
            cli, ["telegram", "set-webhook", running.url, "--config", str(config)]
        )
        assert result.exit_code == 0, result.output
        updates = Updates()
        for name in ("Ann", "Anna", "Ann", "Anna"):
            assert telegram.write(updates.message(TelegramUser(111, name), "hi")) == 200

        def recorded() -> list[str]:
            history = journal(running, lambda s: s.history(channel="telegram", limit=20))
            return [r.event_id for r in history]

        wait_for(lambda: "telegram:msg:111:4" in recorded())
        wait_for(lambda: not journal(running, lambda s: s.jobs(status="pending")))
        assert replies(telegram, 111) == ["Now Anna", "Now Ann", "Now Anna"]


@pytest.mark.parametrize("header", ["", "wrong-secret", SECRET + "x"])
def test_a_missing_or_wrong_secret_header_is_not_found(
    server: Server, telegram: FakeTelegram, header: str
) -> None:
    update = Updates().message(ANN, "Hi")
    assert telegram.deliver(update, secret_token=header) == 404
    answer = httpx.post(
        f"{server.url}/webhooks/telegram/{SECRET}",
        json=update,
        headers={"X-Telegram-Bot-Api-Secret-Token": header} if header else {},
    )
    assert answer.status_code == 404
    assert answer.json() == {"error": "unknown channel or wrong secret"}
    assert journal(server, lambda s: s.inbox_items()) == []


def test_the_secret_token_header_is_compared_in_time_that_tells_nothing_of_its_length(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hmac.compare_digest`` is constant time only for inputs of one length: the header was
    compared as it came, against the secret as configured."""
    import hmac

    compared: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    update = Updates().message(ANN, "Hi")
    for header, status in (("x", 404), (SECRET[:-1], 404), (SECRET * 20, 404), (SECRET, 200)):
        answer = httpx.post(
            f"{server.url}/webhooks/telegram/{SECRET}",
            json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": header},
        )
        assert answer.status_code == status
    assert len(compared) >= 8  # the URL's secret and the header's, each time
    assert set(compared) == {(32, 32)}, compared


def test_a_user_who_blocked_the_bot_fails_permanently_with_the_reason(
    server: Server, telegram: FakeTelegram
) -> None:
    telegram.block(111)
    assert telegram.write(Updates().message(ANN, "Hi")) == 200
    dead = wait_for(lambda: journal(server, lambda s: s.jobs(status="dead")))
    assert len(dead) == 1
    assert "the user blocked the bot" in (dead[0].last_error or "")
    assert len(telegram.messages(111)) == 1  # tried once, not retried


def test_a_body_that_is_no_update_is_set_aside_never_a_5xx(
    server: Server, telegram: FakeTelegram
) -> None:
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
    url = f"{server.url}/webhooks/telegram/{SECRET}"
    answer = httpx.post(url, json={"update_id": "x"}, headers=headers)
    assert answer.status_code == 200
    failed = wait_for(lambda: journal(server, lambda s: s.inbox_items(status="failed")))
    assert "update_id must be an integer" in (failed[0].error or "")


def _strings(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))
    elif isinstance(value, str):
        yield path


def test_lone_surrogates_in_any_string_of_an_update_are_accepted_and_answered(
    server: Server, telegram: FakeTelegram
) -> None:
    """Valid JSON with ``\\ud800`` in any string (names, text, caption, file ids...) is
    accepted and processed as if it were U+FFFD: never a 5xx, never a poisoned item."""
    updates = Updates()
    users = itertools.count(1000)
    headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET, "Content-Type": "application/json"}
    bodies: list[bytes] = []
    for kind in ("text", "photo", "document", "location"):
        template = updates.message(ANN, "/start hi", kind=kind, caption="cap")
        for path in _strings(template):
            user = TelegramUser(next(users), "Ann", "Lee", username="ann", language_code="en")
            update = updates.message(user, "/start hi", kind=kind, caption="cap")
            parent = update
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] += "\ud800x\udfff"
            bodies.append(json.dumps(update).encode())  # ASCII: the surrogates as \u escapes
    assert len(bodies) > 30
    for body in bodies:
        answer = httpx.post(
            f"{server.url}/webhooks/telegram/{SECRET}", content=body, headers=headers
        )
        assert answer.status_code == 200, answer.text

    def settled() -> bool:
        items = journal(server, lambda s: s.inbox_items())
        return len(items) == len(bodies) and all(i.status != "pending" for i in items)

    wait_for(settled, timeout=60)
    assert journal(server, lambda s: s.inbox_items(status="failed")) == []
    wait_for(lambda: any("\ufffd" in text for text in replies(telegram, 1000)), timeout=60)


def test_an_update_over_the_body_limit_is_refused_alone(
    server: Server, telegram: FakeTelegram
) -> None:
    """A webhook body over ``server.max_body_bytes`` (4 MiB) is answered 413, unread; the
    updates after it, of the same user and of others, are taken and answered as ever."""
    updates = Updates()
    assert telegram.write(updates.message(ANN, "я" * 2_200_000)) == 413
    assert telegram.write(updates.message(ANN, "Hi")) == 200
    assert telegram.write(updates.message(BORIS, "Hello")) == 200
    wait_for(lambda: replies(telegram, 111) and replies(telegram, 222))
    assert replies(telegram, 111) == ["Hello Ann Lee!"]
    assert replies(telegram, 222) == ["Hello Boris!"]


def test_a_service_message_in_the_chat_gets_no_reply(
    server: Server, telegram: FakeTelegram
) -> None:
    updates = Updates()
    assert telegram.write(updates.message(ANN, "Hi")) == 200
    wait_for(lambda: replies(telegram, 111))
    pinned = {"message_id": 1, "chat": {"id": 111, "type": "private"}, "date": updates.date}
    assert telegram.write(updates.service(ANN, "pinned_message", pinned)) == 200
    assert telegram.write(updates.message(ANN, "later")) == 200
    wait_for(lambda: len(replies(telegram, 111)) >= 2)
    assert replies(telegram, 111) == ["Hello Ann Lee!", "Got text: later"]


def test_replies_go_to_the_topic_the_user_wrote_in(server: Server, telegram: FakeTelegram) -> None:
    updates = Updates()
    assert telegram.write(updates.message(ANN, "Refund please", topic=7)) == 200
    assert telegram.write(updates.message(ANN, "and a bug", topic=9)) == 200
    assert telegram.write(updates.message(ANN, "hello?")) == 200
    wait_for(lambda: len(replies(telegram, 111)) == 3)
    sent = telegram.messages(111, accepted=True)
    assert [(m.text, m.request.data.get("message_thread_id")) for m in sent] == [
        ("Hello Ann Lee!", 7),
        ("Got text: and a bug", 9),
        ("Got text: hello?", None),
    ]
