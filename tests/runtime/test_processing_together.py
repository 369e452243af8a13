"""Items of different conversations are normalized, evaluated and recorded together (one
transaction each step, one exchange with the worker), and an item that cannot be recorded
with the others never costs them their record nor gets one it should not have."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from daemons import chat_started, write_setup

from rulekit.errors import StoreUnavailable
from rulekit.event import Event
from rulekit.runtime.evaluator import Evaluator
from rulekit.runtime.feed import LiveFeed
from rulekit.runtime.metrics import Metrics
from rulekit.runtime.planning import Processed
from rulekit.runtime.processor import Processor
from rulekit.runtime.worker import Limits
from rulekit.snapshot import Snapshot, load_snapshot
from rulekit.store.base import JournaledState
from rulekit.store.sqlite import SQLiteStore

CHANNEL = "online-chat"


class CountingStore(SQLiteStore):
    """A SQLite store that counts its transactions and can let "another daemon" commit just
    before a given one of them begins, or another thread act as soon as one commits."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.transactions = 0
        self.before: dict[int, Callable[[], None]] = {}
        self.committed: Callable[[], None] | None = None
        self.fail_commit: int | None = None
        """The transaction whose commit fails, as a database blip makes it."""

    def transaction(self) -> AbstractContextManager[JournaledState]:  # type: ignore[override]
        self.transactions += 1
        meanwhile = self.before.pop(self.transactions, None)
        if meanwhile is not None:
            meanwhile()
        if self.committed is None and self.fail_commit != self.transactions:
            return super().transaction()
        return self._watched(super().transaction(), self.fail_commit == self.transactions)

    @contextlib.contextmanager
    def _watched(
        self, transaction: AbstractContextManager[JournaledState], fail: bool
    ) -> Iterator[JournaledState]:
        with transaction as state:
            yield state
            if fail:  # (raised inside: the transaction is rolled back)
                raise StoreUnavailable("injected: the commit did not reach the disk")
        if self.committed is not None:
            self.committed()


@contextlib.contextmanager
def processor(folder: Path, chatra) -> Iterator[tuple[Processor, CountingStore, Snapshot]]:
    config = write_setup(folder, chatra=chatra)
    snapshot = load_snapshot(config)
    evaluator = Evaluator(config, limits=Limits(event_wall=60))
    store = CountingStore(folder / "state.sqlite3")
    try:
        yield (
            Processor(store, lambda: snapshot, evaluator, metrics=Metrics(), feed=LiveFeed()),
            store,
            snapshot,
        )
    finally:
        evaluator.close()
        store.close()


def append(store: SQLiteStore, body: bytes, provider) -> int:
    with store.transaction() as state:
        inbox_id, _ = state.append_inbox(
            CHANNEL, body, conversation_key=provider.conversation_key(json.loads(body))
        )
    return inbox_id


def inbox_status(store: SQLiteStore, inbox_id: int) -> str:
    with store.transaction() as state:
        item = state.get_inbox(inbox_id)
    assert item is not None
    return item.status


def test_items_of_different_conversations_take_one_transaction_per_step(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        ids = [append(store, chat_started(n), provider) for n in range(1, 5)]
        before = store.transactions
        results, claimed, failure = processing.process_round(snapshot)
        assert failure is None and claimed == 4
        # claim, normalize (rolled back), record: three transactions for the four items
        assert store.transactions - before == 3
        processed = [r for r in results if isinstance(r, Processed)]
        assert [p.inbox_id for p in processed] == ids
        assert all(p.recorded and [j.action for j in p.jobs] == ["autoreply"] for p in processed)
        assert {inbox_status(store, i) for i in ids} == {"done"}


def test_a_conversation_seen_again_sees_what_its_first_item_recorded(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        first = append(store, chat_started(1), provider)
        again = append(store, chat_started(1), provider)  # the same webhook, delivered twice
        other = append(store, chat_started(2), provider)
        results = []
        while True:  # an item waits for the older one of its conversation: another round
            done, claimed, failure = processing.process_round(snapshot)
            assert failure is None
            results.extend(done)
            if not claimed:
                break
        processed = {r.inbox_id: r for r in results if isinstance(r, Processed)}
        assert processed[first].recorded and processed[other].recorded
        assert again not in processed  # its message was seen: no event, nothing sent twice
        assert {inbox_status(store, i) for i in (first, again, other)} == {"done"}


def test_when_one_item_cannot_be_recorded_with_the_others_each_is_recorded_alone(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        ids = [append(store, chat_started(n), provider) for n in range(1, 4)]

        def another_daemon_handles_visitor_2() -> None:
            with SQLiteStore.transaction(store) as state:
                provider.parse(chat_started(2), state)

        # the round's transactions: claim, normalize, then the record of the three items
        store.before[store.transactions + 3] = another_daemon_handles_visitor_2
        results, _, failure = processing.process_round(snapshot)
        assert failure is None and not store.before
        processed = {r.inbox_id: r for r in results if isinstance(r, Processed)}
        assert processed[ids[0]].recorded and processed[ids[2]].recorded
        assert [j.action for j in processed[ids[0]].jobs] == ["autoreply"]
        # visitor 2's plan was derived before the other daemon's commit: started over, its
        # message is seen, so no event of ours (and no second reply)
        assert ids[1] not in processed
        assert {inbox_status(store, i) for i in ids} == {"done"}
        with store.transaction() as state:
            recorded = [state.get_event(processed[i].event.id) for i in (ids[0], ids[2])]
        assert None not in recorded


def test_a_busy_processor_claims_the_next_round_as_it_records(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        processing.batch = 3
        ids = [append(store, chat_started(n), provider) for n in range(1, 8)]
        before = store.transactions
        _, claimed, failure = processing.process_round(snapshot)
        assert failure is None and claimed == 3
        # claim, normalize, record (which claimed the next three)
        assert store.transactions - before == 3
        with store.transaction() as state:
            assert {state.get_inbox(i).status for i in ids[3:6]} == {"pending"}
            assert {state.get_inbox(i).claimed_by for i in ids[3:6]} == {processing.owner}
            assert state.get_inbox(ids[6]).claimed_by is None
        before = store.transactions
        _, claimed, failure = processing.process_round(snapshot)
        assert failure is None and claimed == 3
        # no claim of its own: normalize, record (claiming the last one)
        assert store.transactions - before == 2
        _, claimed, failure = processing.process_round(snapshot)
        assert failure is None and claimed == 1
        _, claimed, failure = processing.process_round(snapshot)
        assert failure is None and claimed == 0  # nothing left: an ordinary claim found none
        assert {inbox_status(store, i) for i in ids} == {"done"}


def test_claims_for_the_next_round_are_handed_back_at_shutdown(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        processing.batch = 2
        ids = [append(store, chat_started(n), provider) for n in range(1, 5)]
        processing.process_round(snapshot)
        with store.transaction() as state:
            assert state.get_inbox(ids[2]).claimed_by == processing.owner
            state.release_claims(processing.owner)  # what the daemon does as it stops
        with store.transaction() as state:
            claimed = state.claim_inbox("another-daemon", lease=30, limit=10)
        assert [item.id for item in claimed] == ids[2:]


def test_the_dispatcher_is_handed_each_event_as_the_store_recorded_it(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        for n in range(1, 4):
            append(store, chat_started(n), provider)
        results, _, failure = processing.process_round(snapshot)
        assert failure is None
        events = [r.event for r in results if isinstance(r, Processed) and r.jobs]
        assert len(events) == 3
        with store.transaction() as state:
            records = state.events_for_jobs([event.id for event in events])
        for event in events:
            handed = processing.recorded_event(event.id)
            assert handed == Event.model_validate(records[event.id].data)
            assert handed.raw is None and event.raw is not None
            assert processing.recorded_event(event.id) is None  # handed over once


def test_the_events_are_handed_over_by_the_time_their_jobs_can_be_claimed(tmp_path, chatra):
    # the dispatcher claims in a thread of its own: it may claim the jobs of a record the
    # moment the transaction commits, before the processor's thread runs again
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        ids = [append(store, chat_started(n), provider) for n in range(1, 4)]
        handed: dict[str, Event | None] = {}

        def claim_what_is_committed() -> None:
            with contextlib.closing(sqlite3.connect(tmp_path / "state.sqlite3")) as db:
                rows = db.execute("SELECT DISTINCT event_id FROM outbox").fetchall()
            for (event_id,) in rows:
                if event_id not in handed:
                    handed[event_id] = processing.recorded_event(event_id)

        store.committed = claim_what_is_committed
        results, _, failure = processing.process_round(snapshot)
        assert failure is None
        events = [r.event for r in results if isinstance(r, Processed) and r.jobs]
        assert len(events) == len(ids) and set(handed) == {event.id for event in events}
        for event in events:
            assert handed[event.id] == event.model_copy(update={"raw": None})


def test_an_event_whose_record_did_not_commit_is_not_handed_over(tmp_path, chatra):
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        for n in range(1, 4):
            append(store, chat_started(n), provider)
        store.fail_commit = store.transactions + 3  # claim, normalize, record
        _, claimed, failure = processing.process_round(snapshot)
        assert claimed == 3 and isinstance(failure, StoreUnavailable)
        for n in range(1, 4):
            assert processing.recorded_event(f"{CHANNEL}:msg:msg{n:08d}") is None
        results, _, failure = processing.process_round(snapshot)  # the blip is over
        assert failure is None
        events = [r.event for r in results if isinstance(r, Processed) and r.jobs]
        assert [event.id for event in events] == [f"{CHANNEL}:msg:msg{n:08d}" for n in (1, 2, 3)]
        assert all(processing.recorded_event(event.id) is not None for event in events)


def test_the_events_kept_for_the_dispatcher_are_bounded_in_bytes(tmp_path, chatra):
    """While a destination holds their jobs back, the events kept for the dispatcher stay
    within a budget of bytes (the oldest dropped: the dispatcher reads those from the store),
    not only of events: 2,000 clients' messages of 4 MB would be 8 GB."""
    from rulekit.runtime.handover import RECORDED_BYTES

    count = RECORDED_BYTES // 1_000_000 + 4
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        for n in range(1, count + 1):
            append(store, chat_started(n, text=f"{n} " + "x" * 1_000_000), provider)
        events = []
        while len(events) < count:
            results, _, failure = processing.process_round(snapshot)
            assert failure is None
            events += [r.event for r in results if isinstance(r, Processed) and r.jobs]
        handed = [processing.recorded_event(event.id) for event in events]
        kept = [event for event in handed if event is not None]
        assert 1 <= len(kept) < len(events)
        assert sum(len(event.message.text or "") for event in kept) <= RECORDED_BYTES
        assert kept[-1].id == events[-1].id  # the newest kept, the oldest dropped
        assert handed[0] is None


def test_a_round_claims_bodies_within_a_budget_of_bytes(tmp_path, chatra):
    """A round holds the bodies it claims, each decoded into events that keep it: its items'
    bodies stay within a budget of bytes (64 bodies of 4 MiB would be 256 MiB, more than 1 GB
    decoded); the items left wait for the next rounds, all processed in order."""
    from rulekit.runtime.processor import ROUND_BYTES

    size = 1_000_000
    count = ROUND_BYTES // size + 8
    with processor(tmp_path, chatra) as (processing, store, snapshot):
        provider = snapshot.providers[CHANNEL]
        for n in range(1, count + 1):
            append(store, chat_started(n, text=f"{n} " + "x" * size), provider)
        events = []
        rounds = 0
        while len(events) < count:
            results, claimed, failure = processing.process_round(snapshot)
            assert failure is None and 1 <= claimed <= ROUND_BYTES // size
            events += [r.event for r in results if isinstance(r, Processed)]
            rounds += 1
        assert rounds >= 2
        assert [event.id for event in events] == [
            f"{CHANNEL}:msg:msg{n:08d}" for n in range(1, count + 1)
        ]
