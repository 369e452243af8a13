"""Console sessions: tokens matched by their hash, sessions that end when they expire or when a
reload revokes the token."""

from __future__ import annotations

import hashlib

import pytest

from rulekit.config import Config, ConsoleSettings, RawConfig
from rulekit.directory import AgentEntry, Directory
from rulekit.server.console.sessions import (
    MAX_SESSIONS,
    MAX_SESSIONS_PER_TOKEN,
    Sessions,
    Viewer,
    hash_problems,
    identify,
    token_hash,
)


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


def test_a_session_ends_when_a_reload_revokes_its_token() -> None:
    sessions = Sessions()
    before = config_with([agent("ann@example.com", "t-ann")])
    session = sessions.open(token_hash("t-ann"))
    assert sessions.viewer(session, before) is not None
    after = config_with([agent("ann@example.com", "t-new")])
    assert sessions.viewer(session, after) is None
    assert sessions.viewer(session, before) is None  # gone for good
    assert len(sessions) == 0


def test_one_token_signing_in_again_and_again_signs_nobody_else_out() -> None:
    """Sessions are kept in a bounded table; one token (an agent's script, a leaked token)
    filling it ends its own oldest sessions, not the other agents' or the admin's."""
    sessions = Sessions()
    config = config_with(
        [agent("ann@example.com", "t-ann"), agent("bob@example.com", "t-bob")],
        admin=token_hash("t-admin"),
    )
    ann = sessions.open(token_hash("t-ann"))
    admin = sessions.open(token_hash("t-admin"))
    bob = [sessions.open(token_hash("t-bob")) for _ in range(MAX_SESSIONS + 10)]
    assert sessions.viewer(ann, config).email == "ann@example.com"  # type: ignore[union-attr]
    assert sessions.viewer(admin, config).admin  # type: ignore[union-attr]
    assert sessions.viewer(bob[-1], config).email == "bob@example.com"  # type: ignore[union-attr]
    assert sessions.viewer(bob[0], config) is None  # bob's oldest ended
    assert len(sessions) == 2 + MAX_SESSIONS_PER_TOKEN
    for session in bob[-MAX_SESSIONS_PER_TOKEN:]:
        sessions.close(session)
    assert len(sessions) == 2


def test_a_session_expires_when_unused() -> None:
    sessions = Sessions(ttl=-1)
    config = config_with([agent("ann@example.com", "t-ann")])
    session = sessions.open(token_hash("t-ann"))
    assert sessions.viewer(session, config) is None
    assert sessions.viewer(None, config) is None
    assert sessions.viewer("forged", config) is None


def test_hashes_that_can_never_match_are_reported() -> None:
    typo = agent("ann@example.com", None)
    typo.token_sha256 = "t-ann"  # the token itself, pasted in place of its hash
    config = config_with([typo, agent("bob@example.com", "t-bob")], admin=token_hash("x"))
    (problem,) = hash_problems(config)
    assert "ann@example.com" in problem and "64" in problem
