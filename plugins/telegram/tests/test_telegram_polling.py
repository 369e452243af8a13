"""Long polling, durably: an update is acknowledged to Telegram only once it is in the inbox,
one poller at a time holds the lease, and a daemon set to ``updates: polling`` answers users
with no webhook at all."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from rulekit.errors import MAX_RETRY_AFTER, StoreUnavailable
from rulekit.runtime.commit import GroupCommit
from rulekit.runtime.metrics import Metrics
from rulekit.server.daemon import Daemon
from rulekit.server.fetching import InboxInbound
from rulekit.store.base import JournaledStore
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.clock import run_virtual
from rulekit.testing.fake_telegram import FakeTelegram, error
from rulekit.testing.fakehttp import Response
from rulekit.testing.telegram_updates import Updates
from telegram_daemon import Server, samples_clock, wait_for, write_setup
from telegram_samples import ANN, BORIS, make_provider

from rulekit_telegram.polling import IDLE_INTERVAL, Poller
from rulekit_telegram.update import update_key


@pytest.fixture
def telegram() -> Iterator[FakeTelegram]:
    with FakeTelegram(token="987654:bot-token-secret") as fake:
        yield fake


class FailingFirst(InboxInbound):
    """The daemon's inbox, whose store is unavailable for the first ``failures`` updates."""

    def __init__(self, *args, failures: int = 1, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.failures = failures

    async def accept(self, body: bytes, **keys) -> bool:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the disk is full")
        return await super().accept(body, **keys)


def inbox(store: JournaledStore) -> list[str | None]:
    with store.transaction() as state:
        return sorted(item.delivery_key for item in state.inbox_items())  # type: ignore[misc]


async def _poll(store: JournaledStore, telegram: FakeTelegram, steps: int, **options) -> Poller:
    commit = GroupCommit(store)
    commit.start()
    try:
        provider = make_provider(
            token=telegram.token, base_url=telegram.service.base_url, updates="polling"
        )
        inbound = FailingFirst(
            "telegram", commit, Metrics(), lambda: None, "daemon-a", lambda: 1 << 20, **options
        )
        poller = Poller(provider, inbound, poll_timeout=0, lease=30)
        for _ in range(steps):
            await poller.step()
        await provider.aclose()
        return poller
    finally:
        await commit.aclose()


async def _virtual_steps(
    store: JournaledStore, telegram: FakeTelegram, steps: int
) -> tuple[Poller, list[float]]:
    """``steps`` steps of a poller (on a virtual-time loop), and the loop's time after each."""
    loop = asyncio.get_running_loop()
    commit = GroupCommit(store)
    commit.start()
    try:
        provider = make_provider(
            token=telegram.token, base_url=telegram.service.base_url, updates="polling"
        )
        inbound = InboxInbound(
            "telegram", commit, Metrics(), lambda: None, "daemon-a", lambda: 1 << 20
        )
        poller = Poller(provider, inbound, poll_timeout=0, lease=30)
        times = []
        for _ in range(steps):
            await poller.step()
            times.append(loop.time())
        await provider.aclose()
        return poller, times
    finally:
        await commit.aclose()


def test_an_update_is_acknowledged_only_once_it_is_in_the_inbox(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    updates = Updates()
    first, second = updates.message(ANN, "one"), updates.message(BORIS, "two")
    telegram.write(first)
    telegram.write(second)
    # the store fails on the first update: nothing is acknowledged, nothing is skipped
    poller = asyncio.run(_poll(store, telegram, 1, failures=1))
    assert poller.offset is None
    assert inbox(store) == []
    assert len(telegram.pending) == 2
    # next time both are kept, then acknowledged by the next call's offset
    asyncio.run(_poll(store, telegram, 2, failures=0))
    keys = [update_key(first), update_key(second)]
    assert inbox(store) == keys
    assert telegram.pending == []
    offsets = [c.json.get("offset") for c in telegram.calls("getUpdates")]
    assert offsets == [None, None, second["update_id"] + 1]
    store.close()


def test_updates_fetched_again_after_a_crash_are_kept_once(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    telegram.write(Updates().message(ANN, "one"))
    asyncio.run(_poll(store, telegram, 1, failures=0))  # kept, not acknowledged: then "crash"
    assert len(telegram.pending) == 1
    asyncio.run(_poll(store, telegram, 2, failures=0))  # a new poller fetches it again
    assert len(inbox(store)) == 1
    assert telegram.pending == []
    store.close()


def test_only_the_holder_of_the_lease_polls(tmp_path: Path, telegram: FakeTelegram) -> None:
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    with store.transaction() as state:
        assert state.hold_lease("telegram:poll:telegram", "daemon-b", 300)
    telegram.write(Updates().message(ANN, "one"))

    async def one_step() -> int:
        commit = GroupCommit(store)
        commit.start()
        try:
            provider = make_provider(
                token=telegram.token, base_url=telegram.service.base_url, updates="polling"
            )
            inbound = InboxInbound(
                "telegram", commit, Metrics(), lambda: None, "daemon-a", lambda: 1 << 20
            )
            poller = Poller(provider, inbound, poll_timeout=0, lease=0.01)
            return await poller.step()
        finally:
            await commit.aclose()

    assert asyncio.run(one_step()) == 0
    assert telegram.calls("getUpdates") == []
    with store.transaction() as state:
        state.release_lease("telegram:poll:telegram", "daemon-b")
    assert asyncio.run(one_step()) == 1
    store.close()


def test_a_polling_daemon_answers_users_without_a_webhook(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    config = write_setup(tmp_path, telegram, updates="polling")
    updates = Updates()
    with Server(Daemon(config, watch=False, clock=samples_clock)) as server:
        assert server.daemon.fetchers is not None
        assert server.daemon.fetchers.channels == ["telegram"]
        telegram.write(updates.message(ANN, "Hi"))
        telegram.write(updates.message(ANN, kind="sticker"))
        wait_for(lambda: len(telegram.messages(111, accepted=True)) == 2)
        texts = [m.text for m in telegram.messages(111)]
        assert texts == ["Hello Ann Lee!", "Got sticker: (no text)"]
        wait_for(lambda: telegram.pending == [])  # acknowledged by the next call
    # stopped: the lease was given up for the next daemon
    with SQLiteStore(tmp_path / "rulekit.sqlite3").transaction() as state:
        assert state.hold_lease("telegram:poll:telegram", "another-daemon", 60)


def test_polling_waits_while_a_webhook_is_set(tmp_path: Path, telegram: FakeTelegram) -> None:
    telegram.webhook = {"url": "https://rk.example.com/webhooks/telegram/x"}
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    poller = asyncio.run(_poll(store, telegram, 1, failures=0))
    assert poller.failures == 1  # Telegram's 409 is a failure to wait out, not a crash
    assert telegram.calls("getUpdates")[0].json["timeout"] == 0
    store.close()


def test_a_backlog_of_long_messages_over_the_answer_bound_is_read_in_smaller_batches(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """A hundred messages of 4,096 Cyrillic letters (JSON escapes, as Telegram writes them) are
    an answer of 2.4 MB, over the bound of what rulekit reads of an answer: the poller asks for
    fewer at a time, and every update is kept and acknowledged, not asked for again forever."""
    config = write_setup(tmp_path, telegram, updates="polling")
    updates = Updates()
    for n in range(100):
        telegram.write(updates.message(ANN if n % 2 else BORIS, "я" * 4095 + str(n % 10)))
    with Server(Daemon(config, watch=False, clock=samples_clock)) as server:
        store = server.daemon.store
        wait_for(lambda: len(inbox(store)) == 100, timeout=60)
        wait_for(lambda: telegram.pending == [], timeout=60)  # acknowledged
        limits = [call.json["limit"] for call in telegram.calls("getUpdates")]
        assert limits[:3] == [100, 50, 25], limits
        telegram.write(updates.message(ANN, "and one more"))  # read: the backlog is over
        wait_for(lambda: telegram.calls("getUpdates")[-1].json["limit"] == 100, timeout=30)


def test_one_update_alone_over_the_answer_bound_is_skipped_and_polling_goes_on(
    tmp_path: Path, telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    """An update of 300,000 Cyrillic letters (1.8 MB as JSON escapes) is over the bound even
    asked for alone: it is skipped unread, acknowledged, logged without its content, and the
    updates after it, of every client, are read."""
    config = write_setup(tmp_path, telegram, updates="polling")
    updates = Updates()
    telegram.write(updates.message(ANN, "before"))
    huge = updates.message(BORIS, "я" * 300_000)
    telegram.write(huge)
    telegram.write(updates.message(ANN, "after"))
    with Server(Daemon(config, watch=False, clock=samples_clock)) as server:
        store = server.daemon.store
        wait_for(lambda: len(inbox(store)) == 2, timeout=60)
        wait_for(lambda: telegram.pending == [], timeout=60)  # the huge one acknowledged too
        assert update_key(huge) not in inbox(store)
        telegram.write(updates.message(BORIS, "and later"))
        wait_for(lambda: len(inbox(store)) == 3, timeout=30)
    (line,) = [r.getMessage() for r in caplog.records if "skipped, unread" in r.getMessage()]
    assert str(huge["update_id"]) in line and "я" not in line


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b'{"ok":true,"result":[{"update_id":812,"message":{"text":"', 812),
        (b'{"ok": true, "result": [{"update_id": 7, "message"', 7),
        (b'{"ok":true,"result":[{"update_id":81', None),  # cut off: which is unknown
        (b'{"ok":true,"result":[{"message":{"text":"\\"update_id\\":5"},"update_id":6', None),
        (b'{"ok":false,"result":[{"update_id":3,', None),
        (b"<html>" + b"a" * 4000, None),
    ],
)
def test_the_skipped_update_is_told_by_the_answer_s_structure_only(
    head: bytes, expected: int | None
) -> None:
    from rulekit_telegram.polling import first_update_id

    assert first_update_id(head) == expected


def test_flood_control_on_get_updates_is_waited_out_for_an_hour_at_most(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """A getUpdates 429 asking for a week (a broken proxy, a garbled answer) pauses polling
    for MAX_RETRY_AFTER, as any other call, then the bot's updates are read again."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    flood = error(429, "Too Many Requests: retry after a while", retry_after=7 * 86400)
    # (the connection closed: no keep-alive timer of the client's moves the virtual clock)
    telegram.fail(replace(flood, headers={"Connection": "close"}), method="getUpdates")
    update = Updates().message(ANN, "after the flood")
    telegram.write(update)
    poller, times = run_virtual(_virtual_steps(store, telegram, 2), io_grace=1.0)
    assert times[0] == MAX_RETRY_AFTER
    assert inbox(store) == [update_key(update)]
    assert poller.offset == update["update_id"] + 1
    store.close()


SAME = Updates().message(ANN, "the same update, again and again")


@pytest.mark.parametrize(
    ("result", "new"),
    [
        pytest.param([], 0, id="empty"),  # the poll's timeout ignored
        pytest.param(
            [{"message": {"text": "no update_id"}}, "not an update", 7],
            0,
            id="unreadable",
            marks=pytest.mark.slow,
        ),
        # the offset ignored: only the first answer brings something new
        pytest.param([SAME], 1, id="same-again", marks=pytest.mark.slow),
    ],
)
def test_a_get_updates_answer_given_at_once_with_nothing_new_is_not_asked_again_at_once(
    tmp_path: Path, telegram: FakeTelegram, result: list[object], new: int
) -> None:
    """A server that answers getUpdates at once with nothing new would otherwise be asked
    again as fast as it answers, for ever: the poller spins, and floods the log and the store."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    answer = Response(200, {"ok": True, "result": result})
    telegram.fail(answer, method="getUpdates", times=6)
    _, times = run_virtual(_virtual_steps(store, telegram, 6), io_grace=1.0)
    assert times[-1] >= (5 - new) * IDLE_INTERVAL
    assert len(telegram.calls("getUpdates")) == 6
    assert len(inbox(store)) == new
    store.close()


def test_an_update_numbered_below_the_last_offset_after_a_quiet_week_is_read(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """After a week without updates Telegram numbers the next one at random, maybe below the
    offset the poller last sent: sent again, that offset would confirm it (and those after it)
    unread, and the client's messages would be lost."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    before = Updates(first_update_id=900_000).message(ANN, "before the quiet week")
    after = Updates(first_update_id=1_234).message(BORIS, "a week later")
    telegram.write(before)

    async def scenario() -> Poller:
        commit = GroupCommit(store)
        commit.start()
        provider = make_provider(
            token=telegram.token, base_url=telegram.service.base_url, updates="polling"
        )
        inbound = InboxInbound(
            "telegram", commit, Metrics(), lambda: None, "daemon-a", lambda: 1 << 20
        )
        poller = Poller(provider, inbound, poll_timeout=0, lease=30, idle_interval=0)
        try:
            await poller.step()  # kept
            await poller.step()  # nothing new; its offset confirmed the update
            assert telegram.pending == []
            telegram.write(after)  # a week later
            await poller.step()
            await poller.step()  # (its offset confirms it)
            return poller
        finally:
            await provider.aclose()
            await commit.aclose()

    asyncio.run(scenario())
    assert inbox(store) == sorted([update_key(after), update_key(before)])
    assert telegram.pending == []
    store.close()


def test_polling_that_keeps_failing_shows_in_healthz_until_it_works(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Telegram refusing every getUpdates (a webhook set, a revoked token) is no bug: the
    poller waits and tries again, for ever. Updates are kept a day at most: /healthz says so
    once it has lasted server.stall_after, and no more once a call works."""
    config = write_setup(tmp_path, telegram, updates="polling")
    config.write_text(config.read_text() + "server: {stall_after: 1s}\n")
    telegram.webhook = {"url": "https://rk.example.com/webhooks/telegram/x"}  # 409s

    def stalled() -> list[str]:
        return httpx.get(f"{server.url}/healthz", timeout=10).json()["stalled"]

    with Server(Daemon(config, watch=False, clock=samples_clock)) as server:
        wait_for(lambda: len(telegram.calls("getUpdates")) >= 2)
        assert wait_for(stalled, timeout=30) == [
            "fetching updates for channel 'telegram' failed for 1 s"
        ]
        telegram.webhook = None
        telegram.write(Updates().message(ANN, "Hi"))
        wait_for(lambda: telegram.messages(111, accepted=True), timeout=90)
        wait_for(lambda: stalled() == [], timeout=30)


def test_an_update_numbered_as_an_old_one_is_kept_beside_it(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """Telegram numbers updates anew, at random, after a week without any: an update may come
    with the update_id of one kept long before, for another message, and is no redelivery."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    old = Updates(first_update_id=5_000).message(ANN, "long ago")
    telegram.write(old)
    asyncio.run(_poll(store, telegram, 2, failures=0))
    new = Updates(first_update_id=5_000).message(BORIS, "renumbered")
    assert new["update_id"] == old["update_id"]
    telegram.write(new)
    asyncio.run(_poll(store, telegram, 2, failures=0))
    assert inbox(store) == sorted([update_key(old), update_key(new)])
    assert telegram.pending == []
    store.close()


def test_an_update_with_a_lone_surrogate_is_kept_and_answered_and_polling_goes_on(
    tmp_path: Path, telegram: FakeTelegram
) -> None:
    """``getUpdates`` may carry a lone surrogate (``"\\ud800"``, valid JSON) in any string a
    user wrote: the update is kept as Telegram sent it (the inbox takes such bodies, providers
    read U+FFFD), answered, and the updates after it are read. Writing it out as UTF-8 for the
    inbox raised, and polling asked for the same update again, for ever: one user's odd name
    or message stopped the bot from reading everyone's."""
    config = write_setup(tmp_path, telegram, updates="polling")
    updates = Updates()
    odd = replace(ANN, first_name="Ann\ud800")
    telegram.write(updates.message(odd, "caf\udfffé"))
    telegram.write(updates.message(BORIS, "Hello"))
    with Server(Daemon(config, watch=False, clock=samples_clock)) as server:
        store = server.daemon.store
        wait_for(lambda: len(inbox(store)) == 2, timeout=30)
        wait_for(lambda: telegram.messages(111, accepted=True) and telegram.pending == [])
        wait_for(lambda: telegram.messages(222, accepted=True))
        assert [m.text for m in telegram.messages(111)] == ["Hello Ann\ufffd Lee!"]
        with store.transaction() as state:
            assert state.inbox_items(status="failed") == []
