"""Presence: agents' own choice, connections that run out, and every daemon seeing the same."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def test_nobody_has_presence_until_an_agent_signs_in(store) -> None:
    with store.transaction() as state:
        assert state.presence(now=T0) == {}
        state.set_presence("Ann@Example.com", now=T0)  # signed in, no stream yet
        assert state.presence(now=T0) == {"ann@example.com": "offline"}


def test_a_connection_counts_until_it_runs_out_and_away_is_kept(backend) -> None:
    first, second = backend.open(), backend.open()  # two daemons on one store
    with first.transaction() as state:
        state.set_presence("ann@example.com", connected_until=T0 + timedelta(seconds=45), now=T0)
        state.set_presence("bob@example.com", connected_until=T0 + timedelta(seconds=45), now=T0)
    with second.transaction() as state:
        assert state.presence(now=T0 + timedelta(seconds=44)) == {
            "ann@example.com": "online",
            "bob@example.com": "online",
        }
        state.set_presence("BOB@example.com", status="away", now=T0)
    with first.transaction() as state:
        later = T0 + timedelta(seconds=30)
        # bob's stream renews his connection: he stays away, as he said
        state.set_presence("bob@example.com", connected_until=later + timedelta(seconds=45))
        assert state.presence(now=T0 + timedelta(seconds=46)) == {
            "ann@example.com": "offline",  # not renewed: ran out
            "bob@example.com": "away",
        }
        state.set_presence("bob@example.com", status="online")
        assert state.presence(now=T0 + timedelta(seconds=46))["bob@example.com"] == "online"


def test_only_online_and_away_are_statuses(store) -> None:
    with store.transaction() as state, pytest.raises(ValueError, match="online or away"):
        state.set_presence("ann@example.com", status="busy")
