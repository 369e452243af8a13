"""Console sign-in: personal tokens checked against their SHA-256, and server-side sessions.

The config keeps only hashes (``agents[].token_sha256``, ``console.admin_token_sha256``). A
token is hashed once and compared with every stored hash in constant time, so neither the
comparison nor which entry matched leaks through timing. A session remembers the hash it was
opened with and is checked against the current config on every request: a reload that removes
an agent or changes their token ends their sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field

from rulekit.config import Config
from rulekit.directory import AgentEntry

SESSION_TTL = 12 * 3600.0
"""Seconds a session lives after its last use."""
MAX_SESSIONS = 10_000
"""Sessions the daemon keeps in all (the oldest ends first)."""
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


@dataclass
class Session:
    digest: str
    expires: float


class Sessions:
    """Open console sessions, by a random id that the browser holds in an HttpOnly cookie."""

    def __init__(self, ttl: float = SESSION_TTL) -> None:
        self.ttl = ttl
        self._sessions: dict[str, Session] = {}
        self._held: dict[str, int] = {}
        """How many sessions each token (by its hash) holds."""

    def open(self, digest: str) -> str:
        self._prune()
        if self._held.get(digest, 0) >= MAX_SESSIONS_PER_TOKEN:
            # this token's oldest session (dicts keep insertion order)
            self.close(next(k for k, s in self._sessions.items() if s.digest == digest))
        session_id = secrets.token_urlsafe(32)
        self._sessions[session_id] = Session(digest, time.monotonic() + self.ttl)
        self._held[digest] = self._held.get(digest, 0) + 1
        return session_id

    def close(self, session_id: str | None) -> None:
        session = self._sessions.pop(session_id, None) if session_id else None
        if session is not None:
            left = self._held[session.digest] - 1
            if left:
                self._held[session.digest] = left
            else:
                del self._held[session.digest]

    def viewer(self, session_id: str | None, config: Config) -> Viewer | None:
        """The viewer of a live session, as the current config describes them."""
        session = self._sessions.get(session_id) if session_id else None
        if session is None:
            return None
        now = time.monotonic()
        if session.expires < now:
            self.close(session_id)
            return None
        viewer = identify(config, session.digest)
        if viewer is None:  # the token was revoked by a reload
            self.close(session_id)
            return None
        session.expires = now + self.ttl
        return viewer

    def __len__(self) -> int:
        return len(self._sessions)

    def _prune(self) -> None:
        now = time.monotonic()
        for key in [k for k, s in self._sessions.items() if s.expires < now]:
            self.close(key)
        while len(self._sessions) >= MAX_SESSIONS:  # oldest first (dicts keep insertion order)
            self.close(next(iter(self._sessions)))
