"""Console sessions: tokens matched by their hash, sessions (in a real SQLite store) that end
when they expire or when a reload revokes the token."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from rulekit.config import Config, ConsoleSettings, RawConfig
from rulekit.directory import AgentEntry, Directory
from rulekit.server.console.sessions import (
    MAX_SESSIONS_PER_TOKEN,
    SESSION_MAX_AGE,
    SESSION_TTL,
    Sessions,
    Viewer,
    hash_problems,
    identify,
    session_hash,
    token_hash,
)
from rulekit.store import JournaledStore, open_store


def config_with(agents: list[AgentEntry], admin: str | None = None) -> Config:
    raw = RawConfig(agents=agents, console=ConsoleSettings(admin_token_sha256=admin))
    return Config(raw=raw, directory=Directory(agents, []))


def agent(email: str, token: str | None, channels: list[str] | None = None) -> AgentEntry:
    digest = hashlib.sha256(token.encode()).hexdigest() if token else None
    return AgentEntry(email=email, channels=channels or ["online-chat"], token_sha256=digest)


def test_a_token_names_its_agent_whatever_the_case_of_the_stored_hash() -> None:
    entry = agent("Ann@Example.com", "t-ann")
    entry.token_sha256 = entry.token_sha256.upper()  # type: ignore[union-attr]
    config = config_with([entry, agent("bob@example.com", "t-bob")])
    assert identify(config, token_hash("t-ann")) == Viewer(
        "Ann@Example.com", None, False, frozenset({"online-chat"})
    )
    assert identify(config, token_hash("t-bob")).email == "bob@example.com"  # type: ignore[union-attr]
    assert identify(config, token_hash("t-eve")) is None


def test_the_admin_token_sees_everything() -> None:
    config = config_with([], admin=token_hash("t-admin"))
    viewer = identify(config, token_hash("t-admin"))
    assert viewer is not None and viewer.admin
    assert viewer.may_see_channel("anything")


@pytest.mark.parametrize("stored", [None, "", "not-a-hash"])
def test_missing_or_malformed_hashes_open_nothing(stored: str | None) -> None:
    entry = agent("ann@example.com", None)
    entry.token_sha256 = stored
    config = config_with([entry], admin=stored)
    for token in ("", "not-a-hash", "x"):
        assert identify(config, token_hash(token)) is None
    assert identify(config, "") is None


def test_viewers_hear_sounds_addressed_to_them() -> None:
    ann = Viewer("Ann@Example.com", None, False)
    assert ann.hears(["ann@example.com"])
    assert ann.hears(["*"])
    assert not ann.hears(["bob@example.com"])
    assert not ann.hears("ann@example.com")  # not a list: nothing
    assert not Viewer(None, "admin", True).hears(["ann@example.com"])


class Clock:
    """Seconds since the epoch that move only when the test says."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JournaledStore]:
    store = open_store("sqlite:///sessions.sqlite3", tmp_path)
    try:
        yield store
    finally:
        store.close()


def count(store: JournaledStore) -> int:
    with store.reading() as state:
        return int(state.execute("SELECT count(*) AS n FROM console_sessions").fetchone()["n"])


def test_a_session_ends_when_a_reload_revokes_its_token(store: JournaledStore) -> None:
    async def run() -> None:
        sessions = Sessions(store)
        before = config_with([agent("ann@example.com", "t-ann")])
        session = await sessions.open(token_hash("t-ann"))
        assert await sessions.viewer(session, before) is not None
        after = config_with([agent("ann@example.com", "t-new")])
        assert await sessions.viewer(session, after) is None
        assert await sessions.viewer(session, before) is None  # gone for good
        assert count(store) == 0  # ended in the store: on every daemon

    asyncio.run(run())


def test_one_token_signing_in_again_and_again_signs_nobody_else_out(
    store: JournaledStore,
) -> None:
    """Sessions are kept in a bounded table; one token (an agent's script, a leaked token)
    filling it ends its own oldest sessions, not the other agents' or the admin's."""

    async def run() -> None:
        sessions = Sessions(store)
        config = config_with(
            [agent("ann@example.com", "t-ann"), agent("bob@example.com", "t-bob")],
            admin=token_hash("t-admin"),
        )
        ann = await sessions.open(token_hash("t-ann"))
        admin = await sessions.open(token_hash("t-admin"))
        bob = [await sessions.open(token_hash("t-bob")) for _ in range(MAX_SESSIONS_PER_TOKEN + 10)]
        assert (await sessions.viewer(ann, config)).email == "ann@example.com"  # type: ignore[union-attr]
        assert (await sessions.viewer(admin, config)).admin  # type: ignore[union-attr]
        assert (await sessions.viewer(bob[-1], config)).email == "bob@example.com"  # type: ignore[union-attr]
        assert await sessions.viewer(bob[0], config) is None  # bob's oldest ended
        assert count(store) == 2 + MAX_SESSIONS_PER_TOKEN
        for session in bob[-MAX_SESSIONS_PER_TOKEN:]:
            await sessions.close(session)
        assert count(store) == 2

    asyncio.run(run())


def test_the_store_keeps_a_bounded_number_of_sessions_the_oldest_end_first(
    store: JournaledStore,
) -> None:
    with store.transaction() as state:
        for n in range(5):
            state.open_console_session(
                f"h{n}", f"c{n}", idle=60, per_credential=64, most=3, now=1000.0
            )
    with store.transaction() as state:
        live = [state.console_session(f"h{n}", now=1001.0) for n in range(5)]
    assert live == [None, None, ("c2", 59.0), ("c3", 59.0), ("c4", 59.0)]


def test_a_session_expires_when_unused_and_lasts_while_used(store: JournaledStore) -> None:
    clock = Clock()

    async def run() -> None:
        sessions = Sessions(store, clock=clock, revalidate=0)
        config = config_with([agent("ann@example.com", "t-ann")])
        session = await sessions.open(token_hash("t-ann"))
        for _ in range(3):  # used every 11 hours: it goes on
            clock.now += 11 * 3600
            assert await sessions.viewer(session, config) is not None
        clock.now += SESSION_TTL + 1
        assert await sessions.viewer(session, config) is None
        assert await sessions.viewer(None, config) is None
        assert await sessions.viewer("forged", config) is None

    asyncio.run(run())


def test_a_session_in_steady_use_ends_a_week_after_it_was_opened(store: JournaledStore) -> None:
    clock = Clock()

    async def run() -> None:
        sessions = Sessions(store, clock=clock, revalidate=0)
        config = config_with([agent("ann@example.com", "t-ann")])
        session = await sessions.open(token_hash("t-ann"))
        opened = clock.now
        while clock.now + 3600 < opened + SESSION_MAX_AGE:  # used every hour for a week
            clock.now += 3600
            assert await sessions.viewer(session, config) is not None
        clock.now = opened + SESSION_MAX_AGE + 1
        assert await sessions.viewer(session, config) is None
        again = await sessions.open(token_hash("t-ann"))  # signing in again opens a new one
        assert await sessions.viewer(again, config) is not None

    asyncio.run(run())


def test_the_store_holds_hashes_of_session_ids_and_a_stolen_one_signs_nobody_in(
    store: JournaledStore,
) -> None:
    """What a copy of the sessions table gives away: a hash of each session id, which sent as
    a cookie is hashed again and matches nothing; no session id, email or address."""

    async def run() -> None:
        sessions = Sessions(store)
        config = config_with([agent("ann@example.com", "t-ann")])
        session = await sessions.open(token_hash("t-ann"))
        with store.reading() as state:
            (row,) = state.execute("SELECT * FROM console_sessions").fetchall()
        stored = " ".join(str(value) for value in dict(row).values())
        assert session not in stored and "ann@example.com" not in stored.lower()
        assert row["session_hash"] == session_hash(session)
        assert await sessions.viewer(row["session_hash"], config) is None
        assert await Sessions(store).viewer(row["session_hash"], config) is None
        assert (await Sessions(store).viewer(session, config)).email == "ann@example.com"  # type: ignore[union-attr]

    asyncio.run(run())


def test_hashes_that_can_never_match_are_reported() -> None:
    typo = agent("ann@example.com", None)
    typo.token_sha256 = "t-ann"  # the token itself, pasted in place of its hash
    config = config_with([typo, agent("bob@example.com", "t-bob")], admin=token_hash("x"))
    (problem,) = hash_problems(config)
    assert "ann@example.com" in problem and "64" in problem
