"""Behaviour of the daemon's journal (inbox, audit trail, outbox), the same for every store."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from rulekit.errors import ClaimLost
from rulekit.store import JobSpec
from rulekit.store.records import INTERRUPTED

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BODY = b'{"eventName": "chatStarted", "text": "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82"}'


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def jobs_for(*rules: str) -> list[JobSpec]:
    return [JobSpec(rule, "slack", {"text": f"from {rule}"}, "slack:#ops") for rule in rules]


# inbox -----------------------------------------------------------------------------------------


def test_inbox_keeps_bodies_and_recognises_redeliveries(store):
    with store.transaction() as state:
        first, new = state.append_inbox("online-chat", BODY, delivery_key="chat-1:msg-1", now=T0)
        assert new is True
        assert state.append_inbox("online-chat", b"other", delivery_key="chat-1:msg-1") == (
            first,
            False,
        )
    with store.transaction() as state:
        # a redelivery in a later transaction, and the same key on another channel
        assert state.append_inbox("online-chat", BODY, delivery_key="chat-1:msg-1") == (
            first,
            False,
        )
        other, new_elsewhere = state.append_inbox("telegram", BODY, delivery_key="chat-1:msg-1")
        assert new_elsewhere and other != first
        # without a key nothing is a duplicate
        keyless = [state.append_inbox("online-chat", BODY)[1] for _ in range(2)]
        assert keyless == [True, True]
    with store.transaction() as state:
        items = state.inbox_items()
        assert len(items) == 4
        oldest = items[-1]
        assert (oldest.id, oldest.channel, oldest.body) == (first, "online-chat", BODY)
        assert (oldest.status, oldest.attempts, oldest.received_at) == ("pending", 0, T0)
        assert oldest.delivery_key == "chat-1:msg-1"


def test_concurrent_redeliveries_keep_one_body(backend, threads):
    stores = [backend.open(), backend.open()]
    outcomes: dict[str, list[tuple[int, bool]]] = {f"k{n}": [] for n in range(10)}
    lock = threading.Lock()

    def deliver(index: int) -> None:
        for key in outcomes:
            with stores[index % 2].transaction() as state:
                outcome = state.append_inbox("online-chat", BODY, delivery_key=key)
            with lock:
                outcomes[key].append(outcome)

    threads(deliver, 6)
    with stores[0].transaction() as state:
        stored = {item.delivery_key: item.id for item in state.inbox_items(limit=1000)}
    assert sorted(stored) == sorted(outcomes)
    for key, results in outcomes.items():
        assert len(results) == 6
        assert [new for _, new in results].count(True) == 1, f"{key} was kept twice"
        assert {inbox_id for inbox_id, _ in results} == {stored[key]}


def test_inbox_claims_are_leased(store):
    with store.transaction() as state:
        ids = [state.append_inbox("online-chat", BODY, now=T0)[0] for _ in range(3)]
    with store.transaction() as state:
        first = state.claim_inbox("daemon-a", lease=30, now=T0)
        assert [item.id for item in first] == ids[:1]
        assert (first[0].claimed_by, first[0].attempts) == ("daemon-a", 1)
        assert first[0].claimed_until == later(30)
        rest = state.claim_inbox("daemon-b", lease=30, limit=10, now=later(1))
        assert [item.id for item in rest] == ids[1:]
        assert state.claim_inbox("daemon-b", lease=30, now=later(29)) == []
        # daemon-a died: its claim comes back when the lease ends, as a second attempt
        again = state.claim_inbox("daemon-b", lease=30, now=later(30))
        assert [(item.id, item.attempts, item.claimed_by) for item in again] == [
            (ids[0], 2, "daemon-b")
        ]


def test_inbox_claims_stay_within_a_budget_of_body_bytes(store):
    """A round holds the bodies it claims (and what they decode into): the claim takes the
    oldest items while their bodies fit in the budget together, the first one whatever its
    size, so that a round of big bodies cannot hold a gigabyte."""
    sizes = [400, 300, 200, 100]
    with store.transaction() as state:
        ids = [
            state.append_inbox("online-chat", b"x" * size + str(n).encode(), now=T0)[0]
            for n, size in enumerate(sizes)
        ]
    lengths = [size + 1 for size in sizes]
    with store.transaction() as state:
        first = state.claim_inbox("d", lease=30, limit=10, budget=100, now=T0)
        assert [item.id for item in first] == ids[:1]  # over the budget alone: claimed
        two = state.claim_inbox("d", lease=30, limit=10, budget=lengths[1] + lengths[2], now=T0)
        assert [item.id for item in two] == ids[1:3]
        assert sum(len(item.body) for item in two) == lengths[1] + lengths[2]
        assert [item.id for item in state.claim_inbox("d", lease=30, limit=10, now=T0)] == [ids[3]]


def test_a_conversation_is_claimed_one_item_at_a_time_in_order(store):
    with store.transaction() as state:
        a1, a2, b1, free, a3 = (
            state.append_inbox(channel, BODY, conversation_key=key, now=T0)[0]
            for channel, key in [
                ("online-chat", "A"),
                ("online-chat", "A"),
                ("online-chat", "B"),
                ("online-chat", None),
                ("online-chat", "A"),
            ]
        )
        # the same key on another channel is another conversation
        other = state.append_inbox("telegram", BODY, conversation_key="A", now=T0)[0]
    with store.transaction() as state:
        claimed = state.claim_inbox("daemon-a", lease=30, limit=10, now=T0)
        assert [item.id for item in claimed] == [a1, b1, free, other]
        assert claimed[0].conversation_key == "A"
        for done in (b1, free, other):
            state.finish_inbox(done)
        # a2 waits while a1 is pending, even for another claimer and after a1's lease
        assert state.claim_inbox("daemon-b", lease=30, limit=10, now=later(1)) == []
        [again] = state.claim_inbox("daemon-b", lease=30, limit=10, now=later(31))
        assert again.id == a1
        state.finish_inbox(a1)
        assert [i.id for i in state.claim_inbox("daemon-b", lease=30, limit=10, now=later(32))] == [
            a2
        ]
        # a poison item is set aside and no longer holds its conversation back
        state.finish_inbox(a2, error="PluginError: boom")
        [last] = state.claim_inbox("daemon-b", lease=30, limit=10, now=later(33))
        assert last.id == a3


def test_an_inbox_item_taken_over_is_finished_only_by_the_daemon_that_holds_it(store):
    with store.transaction() as state:
        ids = [state.append_inbox("online-chat", BODY, now=T0)[0] for _ in range(3)]
        state.claim_inbox("daemon-a", lease=30, limit=3, now=T0)
        # daemon-a is held up past its lease; daemon-b takes the first two over
        state.claim_inbox("daemon-b", lease=30, limit=2, now=later(31))
    # (what raises ClaimLost is rolled back with its transaction, as the processor's is)
    with pytest.raises(ClaimLost) as lost, store.transaction() as state:
        state.finish_inbox_items(ids, owner="daemon-a")
    assert lost.value.ids == ids[:2]
    with pytest.raises(ClaimLost), store.transaction() as state:
        state.finish_inbox(ids[0], error="PluginError: boom", owner="daemon-a")
    with store.transaction() as state:
        # an item whose claim ran out and nobody took is still its claimer's to finish
        state.finish_inbox(ids[2], owner="daemon-a")
        state.finish_inbox_items(ids[:2], owner="daemon-b")
    with pytest.raises(ClaimLost), store.transaction() as state:
        state.finish_inbox_items(ids[:1], owner="daemon-b")  # finished: nobody's any more
    with store.transaction() as state:
        assert [(i.id, i.status) for i in state.inbox_items()] == [(i, "done") for i in ids[::-1]]


def test_finished_and_failed_inbox_items(store):
    with store.transaction() as state:
        done_id = state.append_inbox("online-chat", BODY, now=T0)[0]
        poison_id = state.append_inbox("online-chat", b"\xff not json", now=T0)[0]
        state.claim_inbox("d", lease=30, limit=2, now=T0)
        state.finish_inbox(done_id)
        state.finish_inbox(poison_id, error="ChannelError: body is not JSON")
        with pytest.raises(KeyError):
            state.finish_inbox(999)
    with store.transaction() as state:
        assert state.claim_inbox("d", lease=30, limit=10, now=later(60)) == []
        [failed] = state.inbox_items(status="failed")
        assert (failed.id, failed.error, failed.claimed_by) == (
            poison_id,
            "ChannelError: body is not JSON",
            None,
        )
        assert [item.id for item in state.inbox_items(status="done")] == [done_id]
        state.requeue_inbox(poison_id)
    with store.transaction() as state:
        [again] = state.claim_inbox("d", lease=30, now=later(61))
        assert (again.id, again.status, again.error, again.attempts) == (
            poison_id,
            "pending",
            None,
            2,
        )


# audit trail -----------------------------------------------------------------------------------


def test_an_event_is_recorded_once_with_its_jobs(store, make_event):
    recorded = make_event(
        "online-chat:msg-1",
        event="created",
        client={"id": "client-1", "name": "Anna"},
        message={"id": "msg-1", "text": "Hallo"},
        raw={"big": "payload"},
    )
    trace = {"candidates": ["Greet"], "conditions": {"Greet": [True, True]}, "plan": 2}
    with store.transaction() as state:
        inbox_id = state.append_inbox("online-chat", BODY, now=T0)[0]
        assert state.record_event(
            recorded, inbox_id=inbox_id, trace=trace, jobs=jobs_for("Greet", "Ping"), now=later(1)
        )
        assert not state.record_event(
            recorded, inbox_id=inbox_id, trace={}, jobs=jobs_for("Again"), now=later(2)
        )
    with store.transaction() as state:
        record = state.get_event("online-chat:msg-1")
        assert (record.inbox_id, record.channel, record.event, record.conversation_id) == (
            inbox_id,
            "online-chat",
            "created",
            "conv-1",
        )
        assert (record.occurred_at, record.processed_at) == (T0, later(1))
        assert record.trace == trace
        assert record.data == recorded.public()
        assert "raw" not in record.data  # the raw payload stays in the inbox
        jobs = state.jobs(event_id="online-chat:msg-1")
        assert [(job.rule, job.params, job.status, job.attempts) for job in jobs] == [
            ("Greet", {"text": "from Greet"}, "pending", 0),
            ("Ping", {"text": "from Ping"}, "pending", 0),
        ]
        assert all(job.next_attempt_at == later(1) for job in jobs)
        assert state.get_event("unknown") is None


def test_which_events_are_recorded_and_their_records_for_jobs_in_one_read(store, make_event):
    with store.transaction() as state:
        assert state.recorded([]) == set() and state.events_for_jobs([]) == {}
        for n in (1, 2):
            state.record_event(
                make_event(f"e{n}"), inbox_id=None, trace={"plan": n}, jobs=jobs_for("A")
            )
    with store.transaction() as state:
        assert state.recorded(["e1", "unknown", "e2"]) == {"e1", "e2"}
        records = state.events_for_jobs(["e2", "unknown", "e2", "e1"])
        assert sorted(records) == ["e1", "e2"]
        for event_id, record in records.items():
            full = state.get_event(event_id)
            assert record.data == full.data and record.channel == full.channel
            assert record.processed_at == full.processed_at
            assert record.trace == {}  # executing jobs never reads the trace


def test_records_for_jobs_leave_out_the_data_of_events_the_caller_holds(store, make_event):
    with store.transaction() as state:
        for n in (1, 2, 3):
            state.record_event(make_event(f"e{n}"), inbox_id=None, trace={}, jobs=jobs_for("A"))
    with store.transaction() as state:
        records = state.events_for_jobs(["e1", "e2", "e3"], held=["e2", "e3", "unknown"])
        full = {event_id: state.get_event(event_id) for event_id in ("e1", "e2", "e3")}
    assert records["e1"].data == full["e1"].data != {}
    for event_id in ("e2", "e3"):
        assert records[event_id].data == {}
        assert records[event_id].processed_at == full[event_id].processed_at
        assert records[event_id].channel == full[event_id].channel


def test_records_for_jobs_read_the_data_of_the_oldest_events_within_a_budget(store, make_event):
    """The dispatcher holds the data of its jobs' events within a budget of bytes: the store
    reads it for the oldest events while their sizes together fit, and tells each size, so
    the others' can be read when their turn comes."""
    with store.transaction() as state:
        for n in (1, 2, 3, 4):
            state.record_event(make_event(f"e{n}"), inbox_id=None, trace={}, jobs=jobs_for("A"))
    ids = ["e4", "e3", "e2", "e1"]
    with store.transaction() as state:
        sizes = {event_id: r.size for event_id, r in state.events_for_jobs(ids).items()}
        assert all(size > 0 for size in sizes.values())
        within = state.events_for_jobs(ids, budget=sizes["e1"] + sizes["e2"])
        # held events take nothing from the budget: e3 fits in e1's share
        held = state.events_for_jobs(ids, held=["e1"], budget=sizes["e2"] + sizes["e3"])
        none = state.events_for_jobs(ids, budget=0)
        full = {event_id: state.get_event(event_id) for event_id in ids}
    assert {event_id: r.size for event_id, r in within.items()} == sizes
    assert [event_id for event_id in ids if within[event_id].data] == ["e2", "e1"]
    assert within["e1"].data == full["e1"].data and within["e2"].data == full["e2"].data
    assert [event_id for event_id in ids if held[event_id].data] == ["e3", "e2"]
    assert all(record.data == {} for record in none.values())
    assert all(none[event_id].channel == full[event_id].channel for event_id in ids)


def test_history_filters(store, make_event):
    with store.transaction() as state:
        state.record_event(
            make_event("e1", event="created"),
            inbox_id=None,
            trace={},
            jobs=jobs_for("Greet"),
            now=later(1),
        )
        state.record_event(
            make_event("e2", channel="telegram"),
            inbox_id=None,
            trace={},
            jobs=jobs_for("Ping"),
            now=later(2),
        )
        state.record_event(
            make_event("e3"), inbox_id=None, trace={}, jobs=jobs_for("Greet", "Ping"), now=later(3)
        )
        state.record_event(make_event("e4"), inbox_id=None, trace={}, now=later(4))
        [dead] = state.claim_jobs("d", lease=30, limit=1, now=later(5))  # e1's Greet job
        state.record_attempt(dead.id, "dead", error="403 not_in_channel", now=later(5))

    def ids(**filters) -> list[str]:
        with store.transaction() as state:
            return [record.event_id for record in state.history(**filters)]

    assert ids() == ["e4", "e3", "e2", "e1"]
    assert ids(limit=2) == ["e4", "e3"]
    assert ids(channel="telegram") == ["e2"]
    assert ids(event="created") == ["e1"]
    assert ids(rule="Ping") == ["e3", "e2"]
    assert ids(rule="Greet", channel="online-chat") == ["e3", "e1"]
    assert ids(failed=True) == ["e1"]
    assert ids(since=later(3)) == ["e4", "e3"]


# outbox ----------------------------------------------------------------------------------------


def test_jobs_are_claimed_when_due_and_leased_lane_by_lane(store, make_event):
    other = JobSpec("C", "slack", {"text": "from C"}, "slack:#other")
    with store.transaction() as state:
        jobs = [*jobs_for("A", "B"), other]
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs, now=T0)
        assert state.claim_jobs("d", lease=30, now=T0 - timedelta(seconds=1)) == []
        first = state.claim_jobs("daemon-a", lease=30, limit=1, now=T0)
        assert [(job.rule, job.claimed_by, job.claimed_until) for job in first] == [
            ("A", "daemon-a", later(30))
        ]
        # daemon-a holds the lane of slack:#ops: daemon-b gets only the other lane
        second = state.claim_jobs("daemon-b", lease=30, now=later(1))
        assert [(job.rule, job.lane) for job in second] == [("C", "slack:#other")]
        assert state.claim_jobs("daemon-b", lease=30, now=later(29)) == []
        # daemon-a's lease runs out: its whole lane goes to daemon-b, oldest first
        recovered = state.claim_jobs("daemon-b", lease=30, now=later(30))
        assert [(job.rule, job.claimed_by, job.claimed_until) for job in recovered] == [
            ("A", "daemon-b", later(60)),
            ("B", "daemon-b", later(60)),
        ]


def test_a_lane_is_claimed_up_to_its_first_job_that_is_not_due(store, make_event):
    with store.transaction() as state:
        state.record_event(
            make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A", "B"), now=T0
        )
        job_a, _ = state.claim_jobs("daemon-a", lease=30, now=T0)
        state.record_attempt(job_a.id, "retry", error="429", retry_at=later(60), now=later(1))
        # B is due, but A (older, same lane) waits for its retry: B must not overtake it
        assert state.claim_jobs("daemon-b", lease=30, now=later(2)) == []
        assert [job.rule for job in state.claim_jobs("daemon-b", lease=30, now=later(60))] == [
            "A",
            "B",
        ]


def test_a_call_starts_only_for_the_claimer_and_the_oldest_job_of_its_lane(store, make_event):
    with store.transaction() as state:
        state.record_event(
            make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A", "B"), now=T0
        )
        job_a, job_b = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert not state.start_call(job_a.id, "daemon-b", lease=30, now=later(1))
        # B waits for A: its claim is handed back
        assert not state.start_call(job_b.id, "daemon-a", lease=30, now=later(1))
        assert state.jobs(event_id="e1")[1].claimed_by is None
        assert state.start_call(job_a.id, "daemon-a", lease=30, now=later(2))
        [started] = [job for job in state.jobs(event_id="e1") if job.id == job_a.id]
        assert (started.call_started_at, started.call_started_by) == (later(2), "daemon-a")
        assert started.claimed_until == later(32)
        with pytest.raises(KeyError):
            state.start_call(999, "daemon-a", lease=30)


def test_a_call_whose_claimer_died_counts_as_an_interrupted_attempt(store, make_event):
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A"), now=T0)
        [job] = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert state.start_call(job.id, "daemon-a", lease=30, now=later(1))
        # daemon-a dies mid-call; once its lease is over daemon-b takes the job over
        [again] = state.claim_jobs("daemon-b", lease=30, now=later(31))
        assert (again.attempts, again.call_started_by) == (0, "daemon-a")
        assert state.start_call(job.id, "daemon-b", lease=30, now=later(32))
        assert [(a.outcome, a.error) for a in state.attempts(job.id)] == [("retry", INTERRUPTED)]
        state.record_attempt(job.id, "done", result={"ok": True}, now=later(33))
        [done] = state.jobs(event_id="e1")
        assert (done.status, done.attempts, done.call_started_at) == ("done", 2, None)


def test_the_late_outcome_of_a_call_taken_over_is_left_to_the_daemon_that_took_it(
    store, make_event
):
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A"), now=T0)
        [job] = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert state.start_call(job.id, "daemon-a", lease=30, now=later(1))
        # daemon-a is held up past its lease; daemon-b takes the job over and starts its call
        state.claim_jobs("daemon-b", lease=30, now=later(31))
        assert state.start_call(job.id, "daemon-b", lease=30, now=later(32))
        # daemon-a goes on and reports its call: nothing recorded, the job stays daemon-b's
        assert not state.record_attempt(
            job.id, "retry", error="timeout", retry_at=later(90), hold=30, owner="daemon-a"
        )
        [held] = state.jobs(event_id="e1")
        assert (held.status, held.claimed_by, held.call_started_by) == (
            "pending",
            "daemon-b",
            "daemon-b",
        )
        assert state.renew_call(job.id, "daemon-b", lease=30, now=later(40))
        assert state.record_attempt(job.id, "done", result={"ok": True}, owner="daemon-b")
        [done] = state.jobs(event_id="e1")
        assert (done.status, done.attempts, done.result) == ("done", 2, {"ok": True})
        assert [a.outcome for a in state.attempts(job.id)] == ["retry", "done"]  # interrupted
        # a report of a call nobody took over is recorded as before, late or not
        assert state.record_attempt(job.id, "done", owner="daemon-a")
        with pytest.raises(KeyError):
            state.record_attempt(999, "done", owner="daemon-a")


def test_the_messages_a_call_created_are_seen_with_its_recorded_outcome(store, make_event):
    """A reply's own message ids are marked seen by the outcome's record (one statement on
    PostgreSQL), so the channel's echo of it is no event; a late outcome that records nothing
    (taken over) marks nothing either."""
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A"), now=T0)
        [job] = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert state.start_call(job.id, "daemon-a", lease=30, now=later(1))
        state.claim_jobs("daemon-b", lease=30, now=later(31))
        assert state.start_call(job.id, "daemon-b", lease=30, now=later(32))
        assert not state.record_attempt(
            job.id, "done", owner="daemon-a", seen=("online-chat", ["late1"])
        )
        assert state.seen_messages("online-chat", ["late1"]) == set()
        assert state.record_attempt(
            job.id, "done", owner="daemon-b", seen=("online-chat", ["m1", "m2", "m1"])
        )
        assert state.seen_messages("online-chat", ["m1", "m2", "m3"]) == {"m1", "m2"}
        assert state.seen_messages("other-channel", ["m1"]) == set()
        # seen before: the mark is kept, nothing fails
        assert state.mark_messages_seen("online-chat", ["m1", "m4"]) == [False, True]


def test_a_start_withdrawn_by_its_claimer_leaves_the_job_claimed_and_not_started(store, make_event):
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A"), now=T0)
        [job] = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert not state.cancel_call(job.id, "daemon-a")  # not started
        assert state.start_call(job.id, "daemon-a", lease=30, now=later(1))
        assert not state.cancel_call(job.id, "daemon-b")
        assert state.cancel_call(job.id, "daemon-a")
        [held] = state.jobs(event_id="e1")
        assert (held.claimed_by, held.claimed_until) == ("daemon-a", later(31))
        assert (held.call_started_at, held.call_started_by, held.attempts) == (None, None, 0)
        # it starts again later, as a call never made: no interrupted attempt is counted
        assert state.start_call(job.id, "daemon-a", lease=30, now=later(2))
        state.record_attempt(job.id, "done", result={"ok": True}, now=later(3))
        assert not state.cancel_call(job.id, "daemon-a")  # done: nothing to withdraw
        assert [a.outcome for a in state.attempts(job.id)] == ["done"]


def test_a_call_under_way_keeps_its_claim_while_its_claimer_renews_it(store, make_event):
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A"), now=T0)
        [job] = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert not state.renew_call(job.id, "daemon-a", lease=30, now=later(1))  # not started
        assert state.start_call(job.id, "daemon-a", lease=30, now=later(1))
        # the call outlasts the lease; its claimer renews the claim meanwhile
        assert state.renew_call(job.id, "daemon-a", lease=30, now=later(20))
        assert not state.renew_call(job.id, "daemon-b", lease=30, now=later(20))
        assert state.claim_jobs("daemon-b", lease=30, now=later(40)) == []
        [held] = state.jobs(event_id="e1")
        assert (held.claimed_by, held.claimed_until) == ("daemon-a", later(50))
        # its outcome recorded, there is nothing left to renew
        state.record_attempt(job.id, "done", result={"ok": True}, now=later(45))
        assert not state.renew_call(job.id, "daemon-a", lease=30, now=later(46))
        [done] = state.jobs(event_id="e1")
        assert (done.status, done.claimed_by, done.claimed_until) == ("done", None, None)


def test_a_retry_the_claimer_makes_itself_keeps_the_claim(store, make_event):
    with store.transaction() as state:
        state.record_event(
            make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A", "B"), now=T0
        )
        job_a, _ = state.claim_jobs("daemon-a", lease=30, now=T0)
        assert state.start_call(job_a.id, "daemon-a", lease=30, now=later(1))
        state.record_attempt(
            job_a.id, "retry", error="429", retry_at=later(10), hold=30, now=later(2)
        )
        [held, _] = state.jobs(event_id="e1")
        assert (held.claimed_by, held.claimed_until, held.call_started_at) == (
            "daemon-a",
            later(40),
            None,
        )
        # no other daemon takes the job (or its lane) while daemon-a retries it
        assert state.claim_jobs("daemon-b", lease=30, now=later(10)) == []
        assert state.start_call(job_a.id, "daemon-a", lease=30, now=later(10))


def test_attempts_and_outcomes(store, make_event):
    with store.transaction() as state:
        state.record_event(
            make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A", "B"), now=T0
        )
        job_a, job_b = state.claim_jobs("d", lease=30, now=T0)
        state.record_attempt(
            job_a.id, "retry", error="429 Too Many Requests", retry_at=later(60), now=later(1)
        )
        state.record_attempt(job_b.id, "done", result={"ok": True, "ts": "1.2"}, now=later(1))
        with pytest.raises(ValueError, match="retry_at"):
            state.record_attempt(job_a.id, "retry", now=later(1))
        with pytest.raises(KeyError):
            state.record_attempt(999, "done")
    with store.transaction() as state:
        assert state.claim_jobs("d", lease=30, now=later(59)) == []  # A waits for Retry-After
        [again] = state.claim_jobs("d", lease=30, now=later(60))
        assert (again.id, again.attempts, again.last_error) == (
            job_a.id,
            1,
            "429 Too Many Requests",
        )
        state.record_attempt(job_a.id, "done", result={"ok": True}, now=later(61))
        # a late report from a claimer whose lease ran out does not undo "done"
        state.record_attempt(job_a.id, "retry", error="timeout", retry_at=later(90), now=later(62))
    with store.transaction() as state:
        assert state.claim_jobs("d", lease=30, now=later(1000)) == []
        jobs = {job.rule: job for job in state.jobs(event_id="e1")}
        assert (jobs["A"].status, jobs["A"].attempts, jobs["A"].result) == ("done", 3, {"ok": True})
        assert (jobs["B"].status, jobs["B"].result) == ("done", {"ok": True, "ts": "1.2"})
        assert [(a.outcome, a.error, a.at) for a in state.attempts(job_a.id)] == [
            ("retry", "429 Too Many Requests", later(1)),
            ("done", None, later(61)),
            ("retry", "timeout", later(62)),
        ]
        assert [a.result for a in state.attempts(job_b.id)] == [{"ok": True, "ts": "1.2"}]
        assert [job.rule for job in state.jobs(status="done")] == ["B", "A"]


def test_dead_letters_are_visible_and_can_be_requeued(store, make_event):
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, jobs=jobs_for("A"), now=T0)
        [job] = state.claim_jobs("d", lease=30, now=T0)
        state.record_attempt(job.id, "dead", error="400 chat not found", now=later(1))
    with store.transaction() as state:
        assert state.claim_jobs("d", lease=30, now=later(1000)) == []
        [dead] = state.jobs(status="dead")
        assert (dead.id, dead.last_error, dead.claimed_by) == (job.id, "400 chat not found", None)
        state.requeue_job(job.id, now=later(2000))
        with pytest.raises(KeyError):
            state.requeue_job(999)
    with store.transaction() as state:
        assert state.jobs(status="dead") == []
        [again] = state.claim_jobs("d", lease=30, now=later(2000))
        assert (again.id, again.status, again.attempts) == (job.id, "pending", 1)


def test_concurrent_claimers_never_share_a_job(backend, make_event, threads):
    stores = [backend.open(), backend.open()]
    with stores[0].transaction() as state:
        for index in range(40):
            state.record_event(
                make_event(f"e{index}"),
                inbox_id=None,
                trace={},
                jobs=[
                    JobSpec(rule, "slack", {"text": rule}, f"slack:#c{index}")
                    for rule in ("A", "B", "C")
                ],
                now=T0,
            )
    claimed: list[tuple[int, str]] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        owner = f"daemon-{index}"
        while True:
            with stores[index % 2].transaction() as state:
                jobs = state.claim_jobs(owner, lease=600, limit=3, now=later(1))
            if not jobs:
                return
            with lock:
                claimed.extend((job.id, owner) for job in jobs)
            time.sleep(0.001)  # the dispatch itself, during which the others claim

    threads(claimer, 4)
    ids = [job_id for job_id, _ in claimed]
    assert len(ids) == 120
    assert len(set(ids)) == 120, "a job was handed to two claimers"
    assert len({owner for _, owner in claimed}) > 1  # the work really was shared
    with stores[1].transaction() as state:
        owners = {job.id: job.claimed_by for job in state.jobs(limit=1000)}
    assert owners == dict(claimed)


def test_concurrent_claimers_keep_each_lane_to_one_claimer_in_order(backend, make_event, threads):
    """Four claimers (two connections) empty eight lanes of six jobs each, calling and recording
    each job as the dispatcher does: a lane's calls never overlap and go oldest first."""
    stores = [backend.open(), backend.open()]
    lanes, per_lane = 8, 6
    with stores[0].transaction() as state:
        for n in range(per_lane):
            for lane in range(lanes):
                state.record_event(
                    make_event(f"e{lane}-{n}"),
                    inbox_id=None,
                    trace={},
                    jobs=[JobSpec("A", "slack", {"n": n}, f"slack:#c{lane}")],
                    now=T0,
                )
    lock = threading.Lock()
    calling: dict[str, str] = {}  # lane -> the owner whose call is under way
    called: dict[str, list[int]] = {}

    def claimer(index: int) -> None:
        owner, store = f"daemon-{index}", stores[index % 2]
        idle = 0
        while idle < 20:
            with store.transaction() as state:
                jobs = state.claim_jobs(owner, lease=600, limit=3)
            idle = 0 if jobs else idle + 1
            for job in jobs:
                with store.transaction() as state:
                    if not state.start_call(job.id, owner, lease=600):
                        continue
                with lock:
                    assert calling.setdefault(job.lane, owner) == owner, "a lane was split"
                    called.setdefault(job.lane, []).append(job.params["n"])
                time.sleep(0.001)  # the call
                with lock:
                    del calling[job.lane]
                with store.transaction() as state:
                    state.record_attempt(job.id, "done")
            time.sleep(0.001)

    threads(claimer, 4)
    assert called == {f"slack:#c{lane}": list(range(per_lane)) for lane in range(lanes)}


# text no store may refuse -----------------------------------------------------------------------


def test_text_holding_nul_is_stored_and_searched_like_any_other(store, make_event):
    """NUL comes from anywhere: a client's message ("\\u0000" in a provider's JSON), a rule's
    name (YAML's "\\0"), a service's answer quoted in an error. PostgreSQL's text cannot hold
    it, nor can ``->>`` read a JSON document escaping it: there it becomes U+FFFD, so that one
    such message breaks neither its own recording nor every later search and erasure."""
    nul = "\x00"
    event = make_event(
        "e-nul",
        client={"id": "c-nul", "name": f"Ann{nul}"},
        message={"id": "m1", "text": f"hi{nul}there", "author": "client"},
    )
    jobs = [JobSpec(f"rule{nul}", "slack", {"text": f"a{nul}b"}, f"slack:#o{nul}")]
    with store.transaction() as state:
        state.record_event(event, inbox_id=None, trace={"why": nul}, jobs=jobs, now=T0)
        [job] = state.claim_jobs("d", lease=30, limit=1, now=later(1))
        state.record_attempt(job.id, "dead", error=f"HTTP 500: {nul}{nul}", now=later(2))
    with store.transaction() as state:
        [job] = state.jobs(event_id="e-nul")
        assert job.rule in ("rule\x00", "rule\ufffd") and job.status == "dead"
        text = state.get_event("e-nul").data["message"]["text"]
        assert text in ("hi\x00there", "hi\ufffdthere")
        assert [r.event_id for r in state.history(failed=True)] == ["e-nul"]
        assert state.forget_client("c-nul")["events"] == 1
