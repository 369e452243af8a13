"""Per-destination pacing agreed in a PostgreSQL database: every daemon on it reserves its
calls' slots in one table (``pacing``), by the database's clock, so two daemons posting to one
Slack channel are spaced as one daemon would be."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class PostgresPacing:
    """Pacing statements, mixed into :class:`~rulekit.store.sql.postgres.PostgresState`."""

    # provided by SQLState
    execute: Callable[..., Any]
    _one: Callable[..., Any]

    shares_pacing = True

    def reserve_pace(self, key: str, spacing: float) -> float:
        row = self._one(
            "INSERT INTO pacing (key, next_at)"
            " VALUES (:key, clock_timestamp() + :gap * interval '1s')"
            " ON CONFLICT (key) DO UPDATE SET next_at ="
            "  greatest(pacing.next_at, clock_timestamp()) + :gap * interval '1s'"
            " RETURNING extract(epoch FROM next_at - clock_timestamp()) - :gap AS wait",
            {"key": key, "gap": spacing},
        )
        assert row is not None
        return max(float(row["wait"]), 0.0)

    def pause_pace(self, key: str, seconds: float) -> None:
        self.execute(
            "INSERT INTO pacing (key, next_at)"
            " VALUES (:key, clock_timestamp() + :s * interval '1s')"
            " ON CONFLICT (key) DO UPDATE SET next_at ="
            "  greatest(pacing.next_at, clock_timestamp() + :s * interval '1s')",
            {"key": key, "s": seconds},
        )

    def forget_paces(self, found: Callable[[str], bool]) -> int:
        keys = [row["key"] for row in self.execute("SELECT key FROM pacing").fetchall()]
        gone = [key for key in keys if found(key)]
        if gone:
            self.execute("DELETE FROM pacing WHERE key = ANY(:keys::text[])", {"keys": gone})
        return len(gone)

    def forget_past_paces(self) -> int:
        cursor = self.execute(
            "DELETE FROM pacing WHERE next_at < clock_timestamp() - interval '1 hour'"
        )
        return int(cursor.rowcount)

    def paused_for(self, keys: Sequence[str]) -> float:
        row = self._one(
            "SELECT COALESCE(max(extract(epoch FROM next_at - clock_timestamp())), 0) AS wait"
            " FROM pacing WHERE key = ANY(:keys::text[])",
            {"keys": list(keys)},
        )
        assert row is not None
        return max(float(row["wait"]), 0.0)
