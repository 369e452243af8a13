"""A round-robin pick takes the same few statements (each a round trip to a database server,
made while every daemon's picks wait on the assignment lock) however many agents it skips:
offline ones, and ones at their ``max_open``. It took one more statement per agent skipped."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from action_helpers import make_config, make_event
from postgres_schemas import POSTGRES_ENV, schema_url

from rulekit.actions.assign import Assign, AssignParams
from rulekit.config import Config
from rulekit.directory import AgentEntry, Directory
from rulekit.store import JournaledStore, open_store

SOON = datetime.now(UTC) + timedelta(hours=1)  # a connection the test will not outlive


@pytest.fixture(params=["sqlite", *(["postgresql"] if os.environ.get(POSTGRES_ENV) else [])])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JournaledStore]:
    url = "sqlite:///rulekit.sqlite3" if request.param == "sqlite" else schema_url()
    opened = open_store(url, tmp_path)
    try:
        yield opened
    finally:
        opened.close()
        if request.param == "postgresql":
            from rulekit.store.postgres import drop_schema

            drop_schema(url)


def team(size: int) -> Config:
    """``size`` agents of support on online-chat, of whom only the last can take a
    conversation: the others are offline (even ones) or at capacity (``max_open: 0``)."""
    config = make_config()
    agents = [
        AgentEntry(
            email=f"agent{n}@example.com",
            groups=["support"],
            channels=["online-chat"],
            max_open=0 if n % 2 and n < size - 1 else None,
        )
        for n in range(size)
    ]
    config.directory = Directory(agents, ["support"])
    return config


def picks(store: JournaledStore, size: int) -> list[tuple[str, int]]:
    """Who each of three picks took, and the statements its transaction ran."""
    config = team(size)
    gone = datetime(2020, 1, 1, tzinfo=UTC)
    with store.transaction() as state:
        for n in range(size):  # all signed in once; the odd ones and the last still connected
            until = gone if n % 2 == 0 and n < size - 1 else SOON
            state.set_presence(f"agent{n}@example.com", connected_until=until)
    made = []
    params = AssignParams(group="support")
    for n in range(3):
        event = make_event(conversation={"id": f"c{size}-{n}"})
        with store.transaction() as state:
            before = state.statements  # type: ignore[attr-defined]
            change = Assign().rule_change(params, event, state, config)
            made.append((change.result["assigned"], state.statements - before))  # type: ignore[attr-defined]
    return made


def test_a_pick_takes_the_same_statements_for_3_agents_skipped_as_for_300(store):
    few, many = picks(store, 4), picks(store, 301)
    assert [who for who, _ in few] == ["agent3@example.com"] * 3
    assert [who for who, _ in many] == ["agent300@example.com"] * 3
    assert [count for _, count in many] == [count for _, count in few]
    assert max(count for _, count in few) <= 8
