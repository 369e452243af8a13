"""Leases: one owner at a time, renewed by its holder, taken over once it runs out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_one_owner_holds_a_lease_until_it_runs_out(store) -> None:
    with store.transaction() as state:
        assert state.hold_lease("poll:telegram", "a", 60, now=T0)
        assert not state.hold_lease("poll:telegram", "b", 60, now=T0 + timedelta(seconds=30))
        assert state.hold_lease("other", "b", 60, now=T0)  # leases are independent
    with store.transaction() as state:
        # the holder renews it: still held by a at T0 + 100 s
        assert state.hold_lease("poll:telegram", "a", 60, now=T0 + timedelta(seconds=50))
        assert not state.hold_lease("poll:telegram", "b", 60, now=T0 + timedelta(seconds=100))
        # not renewed: it runs out, and b takes it over
        assert state.hold_lease("poll:telegram", "b", 60, now=T0 + timedelta(seconds=111))
        assert not state.hold_lease("poll:telegram", "a", 60, now=T0 + timedelta(seconds=112))


def test_a_released_lease_can_be_taken_at_once(store) -> None:
    with store.transaction() as state:
        assert state.hold_lease("poll:telegram", "a", 60, now=T0)
        state.release_lease("poll:telegram", "b")  # not b's: nothing happens
        assert not state.hold_lease("poll:telegram", "b", 60, now=T0)
        state.release_lease("poll:telegram", "a")
        assert state.hold_lease("poll:telegram", "b", 60, now=T0)


def test_a_lease_taken_in_a_failed_transaction_is_not_held(store) -> None:
    class Boom(Exception):
        pass

    try:
        with store.transaction() as state:
            assert state.hold_lease("poll:telegram", "a", 60, now=T0)
            raise Boom
    except Boom:
        pass
    with store.transaction() as state:
        assert state.hold_lease("poll:telegram", "b", 60, now=T0)


def test_two_stores_on_one_database_agree_on_the_holder(backend) -> None:
    if not backend.durable:
        pytest.skip("a memory store is one daemon's own")
    first, second = backend.open(), backend.open()
    with first.transaction() as state:
        assert state.hold_lease("poll:telegram", "a", 60, now=T0)
    with second.transaction() as state:
        assert not state.hold_lease("poll:telegram", "b", 60, now=T0 + timedelta(seconds=1))
