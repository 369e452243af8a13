"""Console sign-in: personal tokens checked against their SHA-256, and server-side sessions.

The config keeps only hashes (``agents[].token_sha256``, ``console.admin_token_sha256``). A
token is hashed once and compared with every stored hash in constant time, so neither the
comparison nor which entry matched leaks through timing. A session remembers the hash it was
opened with and is checked against the current config on every request: a reload that removes
an agent or changes their token ends their sessions. Sessions live in the store, shared by
every daemon on it (:class:`Sessions`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from rulekit.config import Config
from rulekit.directory import AgentEntry

if TYPE_CHECKING:
    from rulekit.store.base import JournaledState, JournaledStore

SESSION_TTL = 12 * 3600.0
"""Seconds a session lives after its last use."""
SESSION_MAX_AGE = 7 * 24 * 3600.0
"""Seconds a session lives at most, however often it is used: a browser left signed in on a
shared or lost machine is signed out within a week, and the agent signs in again."""
MAX_SESSIONS = 10_000
"""Sessions the store keeps in all (the oldest ends first)."""
REVALIDATE = 5.0
"""Seconds a daemon goes by what it last read of a session before it reads it again: a sign-out
on another daemon of the store is seen within that."""
TOUCH_AFTER = 60.0
"""A session's idle time starts again in the store at most once a minute (its 12 hours count
from its last use, give or take a minute): a page's every request is no write."""
MAX_SESSIONS_PER_TOKEN = 64
"""Sessions one token may hold: signing in again ends that token's oldest session, never
another agent's (a token used in a loop would otherwise sign everyone else out)."""
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class Viewer:
    """Who is looking: an agent (by the directory's email) or the admin (sees everything)."""

    email: str | None
    name: str | None
    admin: bool
    channels: frozenset[str] = field(default_factory=frozenset)

    def may_see_channel(self, channel: str | None) -> bool:
        return self.admin or (channel is not None and channel in self.channels)

    def may_see_agent(self, agent: AgentEntry) -> bool:
        """Whether the viewer may see this agent of the directory (their presence, what rules
        read of them): the admin sees everyone, an agent themselves and the agents sharing a
        channel with them. The console's presence and its ``team`` summaries both ask this."""
        if self.admin or self.channels & set(agent.channels):
            return True
        return self.email is not None and agent.email.lower() == self.email.lower()

    def hears(self, to: object) -> bool:
        """Whether a sound addressed ``to`` (a list of emails or ``["*"]``) is for this viewer."""
        if not isinstance(to, list):
            return False
        targets = {str(t).strip().lower() for t in to}
        return "*" in targets or (self.email is not None and self.email.lower() in targets)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _same(stored: str | None, digest: str) -> bool:
    # compare_digest on equal-length ASCII; a missing or malformed hash never matches
    candidate = (stored or "").strip().lower()
    if len(candidate) != len(digest) or len(digest) != 64:
        return False  # lengths of hex SHA-256 are public: only equal-length values compare
    return hmac.compare_digest(candidate.encode(), digest.encode())


def hash_problems(config: Config) -> list[str]:
    """Stored hashes that can never match (a typo, or a token pasted in place of its hash)."""
    entries = [("console.admin_token_sha256", config.raw.console.admin_token_sha256)]
    entries += [(f"the token_sha256 of {a.email}", a.token_sha256) for a in config.directory.agents]
    return [
        f"console: {where} is not a SHA-256 in hex (64 characters): nobody can sign in with it"
        for where, stored in entries
        if stored and not _HEX64.fullmatch(stored.strip())
    ]


def identify(config: Config, digest: str) -> Viewer | None:
    """The viewer whose stored hash is ``digest`` (a token's SHA-256, hex), if any."""
    found: Viewer | None = None
    if _same(config.raw.console.admin_token_sha256, digest):
        found = Viewer(email=None, name="admin", admin=True)
    for agent in config.directory.agents:
        # no early exit: every entry is compared whatever matched
        if _same(agent.token_sha256, digest) and found is None:
            found = Viewer(agent.email, agent.name, False, frozenset(agent.channels))
    return found


def credentials(config: Config) -> frozenset[str]:
    """The hashes of the tokens that may sign in under ``config`` (lower-case hex)."""
    stored = [config.raw.console.admin_token_sha256]
    stored += [agent.token_sha256 for agent in config.directory.agents]
    return frozenset(
        value.strip().lower() for value in stored if value and _HEX64.fullmatch(value.strip())
    )


def session_hash(session_id: str) -> str:
    """What the store keeps of a session id: its SHA-256 (the id is 256 random bits, so the
    hash cannot be turned back, and a hash sent as a cookie is hashed again: it matches
    nothing)."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """Open console sessions, by a random id that the browser holds in an HttpOnly cookie.

    The sessions are in the store (:mod:`rulekit.store.sessions`), so every daemon on it knows
    them and a restart keeps them. A session ends :data:`SESSION_TTL` after its last use, and
    :data:`SESSION_MAX_AGE` after it was opened however it is used. A daemon keeps what it
    read of a session for :data:`REVALIDATE` seconds: a sign-out (or a session ended) on
    another daemon is seen within that. Whether the session's token is still valid is checked
    against this daemon's config on every request; a reload that removes or changes a token
    ends its sessions in the store (everywhere) at the next console request."""

    def __init__(
        self,
        store: JournaledStore,
        *,
        ttl: float = SESSION_TTL,
        max_age: float = SESSION_MAX_AGE,
        clock: Callable[[], float] = time.time,
        revalidate: float = REVALIDATE,
        config: Config | None = None,
    ) -> None:
        self.store = store
        self.ttl = ttl
        self.max_age = max_age
        self.clock = clock
        """Seconds since the epoch, where the store has no clock of its own (SQLite)."""
        self.revalidate = revalidate
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()
        """Session hash -> the credential read from the store and when (monotonic)."""
        self._config = config
        """The config last seen (first: the one the daemon started with)."""
        self._credentials = credentials(config) if config is not None else frozenset()

    async def open(self, digest: str) -> str:
        """Open a session of the token whose SHA-256 is ``digest``; its id (for the cookie)."""
        session_id = secrets.token_urlsafe(32)
        hashed = session_hash(session_id)
        now = self._now()

        def work() -> list[str]:
            with self.store.transaction() as state:
                return state.open_console_session(
                    hashed,
                    digest,
                    idle=self.ttl,
                    per_credential=MAX_SESSIONS_PER_TOKEN,
                    most=MAX_SESSIONS,
                    now=now,
                )

        for ended in await run_in_threadpool(work):  # (ended elsewhere: seen within REVALIDATE)
            self._known.pop(ended, None)
        self._remember(hashed, digest)
        return session_id

    async def close(self, session_id: str | None) -> None:
        """End the session ``session_id`` (on every daemon)."""
        if not session_id:
            return
        hashed = session_hash(session_id)
        self._known.pop(hashed, None)
        await self._change(lambda state: state.close_console_sessions(session_hash=hashed))

    async def end_all(self) -> None:
        """End every session (the console was turned off)."""
        self._known.clear()
        await self._change(lambda state: state.close_console_sessions())

    async def viewer(self, session_id: str | None, config: Config) -> Viewer | None:
        """The viewer of a live session, as the current config describes them."""
        await self._end_revoked(config)
        if not session_id:
            return None
        hashed = session_hash(session_id)
        known = self._known.get(hashed)
        if known is None or time.monotonic() - known[1] >= self.revalidate:
            now = self._now()

            def work() -> str | None:
                with self.store.reading() as state:  # (holds no writer back)
                    found = state.console_session(hashed, now=now, max_age=self.max_age)
                if found is None:
                    return None
                credential, left = found
                if self.ttl - left >= TOUCH_AFTER:
                    with self.store.transaction() as state:
                        state.extend_console_session(hashed, idle=self.ttl, now=now)
                return credential

            credential = await run_in_threadpool(work)
            if credential is None:
                self._known.pop(hashed, None)
                return None
            self._remember(hashed, credential)
            known = (credential, 0.0)
        # checked against this daemon's config on every request: a reload that revoked the
        # token ends the session here at once (and everywhere through _end_revoked)
        return identify(config, known[0])

    async def _end_revoked(self, config: Config) -> None:
        """End in the store the sessions of tokens that ``config`` no longer has and the
        config seen before it had (a token removed or changed by a reload)."""
        if config is self._config:
            return
        now_valid = credentials(config)
        removed = self._credentials - now_valid if self._config is not None else frozenset()
        if removed:
            for hashed in [h for h, (c, _) in self._known.items() if c in removed]:
                del self._known[hashed]
            await self._change(lambda state: state.close_console_sessions(credentials=removed))
        self._config, self._credentials = config, now_valid

    def _remember(self, hashed: str, credential: str) -> None:
        self._known.pop(hashed, None)
        self._known[hashed] = (credential, time.monotonic())
        while len(self._known) > MAX_SESSIONS:
            self._known.popitem(last=False)

    def _now(self) -> float | None:
        return None if self.store.shared else self.clock()

    async def _change(self, change: Callable[[JournaledState], object]) -> None:
        def work() -> None:
            with self.store.transaction() as state:
                change(state)

        await run_in_threadpool(work)
