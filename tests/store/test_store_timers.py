"""Timers in every store: keep the first or restart, cancel, claim once, finish once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from rulekit.store import JournaledStore

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def set_timer(store: JournaledStore, rule: str = "ping", conversation: str = "c1", **kw) -> None:
    with store.transaction() as state:
        state.set_timer(
            rule,
            conversation,
            "online-chat",
            kw.pop("due", T0 + timedelta(minutes=5)),
            kw.pop("trigger", "e1"),
            now=T0,
            **kw,
        )


def test_a_pending_timer_is_kept_or_restarted(store: JournaledStore) -> None:
    set_timer(store)
    set_timer(store, due=T0 + timedelta(minutes=9), trigger="e2")  # kept: the first one
    with store.transaction() as state:
        (timer,) = state.timers(conversation_id="c1")
        assert (timer.due, timer.trigger_event_id, timer.status) == (
            T0 + timedelta(minutes=5),
            "e1",
            "pending",
        )
        assert state.next_timer_due() == T0 + timedelta(minutes=5)
    set_timer(store, due=T0 + timedelta(minutes=9), trigger="e2", restart=True)
    with store.transaction() as state:
        (timer,) = state.timers(conversation_id="c1")
        assert (timer.due, timer.trigger_event_id) == (T0 + timedelta(minutes=9), "e2")
    set_timer(store, rule="other")  # another rule: its own timer
    set_timer(store, conversation="c2")  # another conversation too
    with store.transaction() as state:
        assert len(state.timers()) == 3
        assert state.next_timer_due() == T0 + timedelta(minutes=5)


def test_cancel_then_a_new_timer(store: JournaledStore) -> None:
    set_timer(store)
    with store.transaction() as state:
        assert state.cancel_timers("ping", "c1", by_event="e-closed", now=T0) == 1
        assert state.cancel_timers("ping", "c1", by_event="e-closed", now=T0) == 0
        assert state.next_timer_due() is None
        (timer,) = state.timers(event_id="e-closed")
        assert (timer.status, timer.by_event, timer.trigger_event_id) == (
            "cancelled",
            "e-closed",
            "e1",
        )
    set_timer(store, trigger="e3")
    with store.transaction() as state:
        assert [t.status for t in state.timers(conversation_id="c1")] == ["pending", "cancelled"]
        assert [t.trigger_event_id for t in state.timers(event_id="e3")] == ["e3"]


def test_claims_are_exclusive_until_the_lease_runs_out(store: JournaledStore) -> None:
    set_timer(store, due=T0)
    set_timer(store, conversation="c2", due=T0 + timedelta(seconds=1))
    set_timer(store, conversation="c3", due=T0 + timedelta(hours=1))
    now = T0 + timedelta(seconds=2)
    with store.transaction() as state:
        claimed = state.claim_timers("a", lease=30, now=now)
    assert [t.conversation_id for t in claimed] == ["c1", "c2"]  # due ones, earliest first
    with store.transaction() as state:
        assert state.claim_timers("b", lease=30, now=now) == []
        taken = state.claim_timers("b", lease=30, now=now + timedelta(seconds=31))
    assert [t.conversation_id for t in taken] == ["c1", "c2"]
    with store.transaction() as state:
        # the first claimer lost them: its outcome is not recorded
        assert not state.finish_timer(claimed[0].id, "a", "fired", at=now)
        assert state.finish_timer(taken[0].id, "b", "fired", at=now, event_id="timer:1")
        assert not state.finish_timer(taken[0].id, "b", "fired", at=now)  # once
        fired = state.timers(event_id="timer:1")
        assert [(t.id, t.status) for t in fired] == [(taken[0].id, "fired")]


def test_a_cancel_while_claimed_wins_over_the_firing(store: JournaledStore) -> None:
    set_timer(store, due=T0)
    with store.transaction() as state:
        (timer,) = state.claim_timers("a", lease=30, now=T0)
        assert state.cancel_timers("ping", "c1", by_event="e-reply", now=T0) == 1
    with store.transaction() as state:
        assert not state.finish_timer(timer.id, "a", "fired", at=T0)
        (after,) = state.timers()
        assert after.status == "cancelled"


def test_a_restart_while_claimed_ends_the_claim(store: JournaledStore) -> None:
    set_timer(store, due=T0)
    with store.transaction() as state:
        (timer,) = state.claim_timers("a", lease=30, now=T0)
    set_timer(store, due=T0 + timedelta(minutes=10), trigger="e2", restart=True)
    with store.transaction() as state:
        assert not state.finish_timer(timer.id, "a", "fired", at=T0)
        assert state.next_timer_due() == T0 + timedelta(minutes=10)


def test_concurrent_claimers_get_each_timer_once(backend) -> None:
    if not backend.durable:
        return  # one store object: its lock serializes everything anyway
    first = backend.open()
    for n in range(60):
        set_timer(first, conversation=f"c{n}", due=T0)
    stores = [backend.open() for _ in range(4)]
    claimed: list[list[int]] = [[] for _ in stores]

    def claim(index: int) -> None:
        while True:
            with stores[index].transaction() as state:
                got = state.claim_timers(f"owner{index}", lease=60, limit=5, now=T0)
            if not got:
                return
            claimed[index].extend(t.id for t in got)

    barrier = threading.Barrier(len(stores))

    def start(index: int) -> None:
        barrier.wait(timeout=10)
        claim(index)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [timer_id for ids in claimed for timer_id in ids]
    assert len(every) == 60 and len(set(every)) == 60


def test_a_timer_handed_back_is_claimed_again_only_after_the_given_time(
    store: JournaledStore,
) -> None:
    set_timer(store)
    due = T0 + timedelta(minutes=5)
    with store.transaction() as state:
        (timer,) = state.claim_timers("a", lease=60, now=due)
        assert not state.hand_back_timer(timer.id, "b", until=due)  # not b's
        assert state.hand_back_timer(timer.id, "a", until=due + timedelta(seconds=2))
        assert state.claim_timers("b", lease=60, now=due + timedelta(seconds=1)) == []
        (again,) = state.claim_timers("b", lease=60, now=due + timedelta(seconds=2))
        assert (again.id, again.claimed_by) == (timer.id, "b")
        assert not state.hand_back_timer(timer.id, "a", until=due)  # b holds it now


def test_the_inbox_says_whether_a_conversation_has_webhooks_waiting(store: JournaledStore) -> None:
    """What a due timer waits for: its conversation's items received by its due time and not
    processed yet (those received later, of other conversations or channels, or done, not)."""
    due = T0 + timedelta(minutes=5)
    with store.transaction() as state:
        first, _ = state.append_inbox("online-chat", b"{}", conversation_key="k1", now=T0)
        state.append_inbox("online-chat", b"{}", conversation_key="k2", now=due + timedelta(1))
        state.append_inbox("other", b"{}", conversation_key="k3", now=T0)
    with store.transaction() as state:
        assert state.inbox_waiting("online-chat", "k1", received_by=due)
        assert not state.inbox_waiting("online-chat", "k1", received_by=T0 - timedelta(1))
        assert not state.inbox_waiting("online-chat", "k2", received_by=due)
        assert not state.inbox_waiting("online-chat", "k3", received_by=due)
        state.finish_inbox(first)
    with store.transaction() as state:
        assert not state.inbox_waiting("online-chat", "k1", received_by=due)
