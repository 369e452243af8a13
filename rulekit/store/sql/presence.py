"""Who of the team is online, in a SQL store: one row per agent who ever signed in to the
console, shared by every daemon on the store.

An agent is ``online`` while their own choice is ``online`` (``away`` when they said so) and a
console stream of theirs renewed ``connected_until`` lately; rows are never deleted, so "has
anyone ever signed in" (which decides ``assign``'s ``only_online`` default) is one read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rulekit.store.records import utc

PRESENCE_STATUSES = ("online", "away")
"""What an agent may say they are."""


class SQLPresence:
    """Presence statements, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    dialect: Any

    def execute(self, sql: str, params: Any = ()) -> Any:  # provided by SQLState
        raise NotImplementedError

    def set_presence(
        self,
        email: str,
        *,
        status: str | None = None,
        connected_until: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        """See :meth:`rulekit.store.base.State.set_presence`."""
        if status is not None and status not in PRESENCE_STATUSES:
            raise ValueError(f"presence is online or away, not {status!r}")
        time = self.dialect.time
        changes = []
        if status is not None:
            changes.append("status = excluded.status")
        if connected_until is not None:
            changes.append("connected_until = excluded.connected_until")
        self.execute(
            "INSERT INTO presence (email, status, connected_until, first_seen_at)"
            " VALUES (:email, :status, :until, :now) ON CONFLICT (email) DO "
            + ("UPDATE SET " + ", ".join(changes) if changes else "NOTHING"),
            {
                "email": email.strip().lower(),
                "status": status or "online",
                "until": time(connected_until),
                "now": time(utc(now)),
            },
        )

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        """See :meth:`rulekit.store.base.State.presence`."""
        read = self.dialect.read_time
        moment = utc(now)
        out: dict[str, str] = {}
        for row in self.execute("SELECT email, status, connected_until FROM presence"):
            until = read(row["connected_until"])
            connected = until is not None and until > moment
            out[row["email"]] = row["status"] if connected else "offline"
        return out


class PostgresPresence(SQLPresence):
    """Presence on PostgreSQL, where several daemons share it: read without a time, it is the
    database's, as the console writes it there (``assign`` reads it so on any daemon)."""

    def presence(self, *, now: datetime | None = None) -> dict[str, str]:
        if now is not None:
            return super().presence(now=now)
        rows = self.execute(
            "SELECT email, status,"
            " COALESCE(connected_until > clock_timestamp(), false) AS connected FROM presence"
        )
        return {row["email"]: row["status"] if row["connected"] else "offline" for row in rows}
