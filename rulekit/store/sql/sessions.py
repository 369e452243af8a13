"""Console sessions and sign-in failures in a SQL store (:mod:`rulekit.store.sessions`), shared
by every daemon on the store.

On PostgreSQL a statement given no ``now`` goes by the database's clock (``clock_timestamp()``),
so daemons whose machines' clocks disagree agree on when a session runs out. A throttle that
locks reads its address's row and the budget ``FOR UPDATE`` after making sure the address has
a row: failed sign-ins on several daemons at once are counted one after another.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any

from rulekit.store.sessions import (
    SIGN_IN_FORGET_AFTER,
    SignInBudget,
    SignInFailures,
    SignInState,
)

_TRIM = (
    "DELETE FROM console_sessions WHERE {credential}id <= (SELECT id FROM console_sessions"
    " {where}ORDER BY id DESC LIMIT 1 OFFSET :keep) RETURNING session_hash"
)


class SQLConsoleSessions:
    """Console statements, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    dialect: Any

    def execute(self, sql: str, params: Any = ()) -> Any:  # provided by SQLState
        raise NotImplementedError

    def _clock(self, now: float | None) -> tuple[str, dict[str, Any]]:
        """The SQL of the time and its parameters: ``now``, or this machine's clock."""
        return ":now", {"now": time.time() if now is None else float(now)}

    # sessions ----------------------------------------------------------------------------------
    def open_console_session(
        self,
        session_hash: str,
        credential: str,
        *,
        idle: float,
        per_credential: int,
        most: int,
        now: float | None = None,
    ) -> list[str]:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.open_console_session`."""
        clock, params = self._clock(now)
        self.execute(
            "INSERT INTO console_sessions (session_hash, credential, opened_at, idle_until)"
            f" VALUES (:hash, :credential, {clock}, {clock} + :idle)",
            {**params, "hash": session_hash, "credential": credential, "idle": float(idle)},
        )
        mine = "credential = :credential "
        ended = self.execute(
            _TRIM.format(credential=f"{mine}AND ", where=f"WHERE {mine}"),
            {"credential": credential, "keep": per_credential},
        ).fetchall()
        ended += self.execute(_TRIM.format(credential="", where=""), {"keep": most}).fetchall()
        return [str(row["session_hash"]) for row in ended]

    def console_session(
        self, session_hash: str, *, now: float | None = None, max_age: float | None = None
    ) -> tuple[str, float] | None:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.console_session`."""
        clock, params = self._clock(now)
        young, params = "", {**params, "hash": session_hash}
        if max_age is not None:
            young, params["max_age"] = f" AND opened_at > {clock} - :max_age", float(max_age)
        row = self.execute(
            f"SELECT credential, idle_until - {clock} AS remaining FROM console_sessions"
            f" WHERE session_hash = :hash AND idle_until > {clock}{young}",
            params,
        ).fetchone()
        return None if row is None else (str(row["credential"]), float(row["remaining"]))

    def extend_console_session(
        self, session_hash: str, *, idle: float, now: float | None = None
    ) -> None:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.extend_console_session`."""
        clock, params = self._clock(now)
        self.execute(
            f"UPDATE console_sessions SET idle_until = {clock} + :idle"
            f" WHERE session_hash = :hash AND idle_until > {clock}",
            {**params, "hash": session_hash, "idle": float(idle)},
        )

    def close_console_sessions(
        self, *, session_hash: str | None = None, credentials: Collection[str] | None = None
    ) -> int:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.close_console_sessions`."""
        if session_hash is not None:
            cursor = self.execute(
                "DELETE FROM console_sessions WHERE session_hash = :hash", {"hash": session_hash}
            )
        elif credentials is not None:
            if not credentials:
                return 0
            cursor = self.execute(
                f"DELETE FROM console_sessions WHERE {self.dialect.one_of('credential', 'c')}",
                {"c": self.dialect.values(sorted(credentials))},
            )
        else:
            cursor = self.execute("DELETE FROM console_sessions")
        return int(cursor.rowcount)

    # sign-in throttle --------------------------------------------------------------------------
    def sign_in_state(
        self, address: str, *, lock: bool = False, now: float | None = None
    ) -> SignInState:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.sign_in_state`."""
        clock, params = self._clock(now)
        if lock:  # a row to lock, also for an address that never failed
            self.execute(
                "INSERT INTO console_sign_ins (address, failures, last_failed, wait_until)"
                " VALUES (:address, 0, 0, 0) ON CONFLICT (address) DO NOTHING",
                {"address": address},
            )
        join = "JOIN" if lock else "LEFT JOIN"
        row = self.execute(
            "SELECT b.tokens, b.filled_at, s.failures, s.last_failed, s.wait_until,"
            f" {clock} AS now FROM console_sign_in_budget b {join} console_sign_ins s"
            f" ON s.address = :address WHERE b.id = 1{self.dialect.for_update if lock else ''}",
            {**params, "address": address},
        ).fetchone()
        if row is None:  # (the migration made the budget's row; nothing deletes it)
            raise RuntimeError("the sign-in budget's row is missing")
        failures = None
        if row["failures"]:
            failures = SignInFailures(
                int(row["failures"]), float(row["last_failed"]), float(row["wait_until"])
            )
        budget = SignInBudget(
            None if row["tokens"] is None else float(row["tokens"]),
            None if row["filled_at"] is None else float(row["filled_at"]),
        )
        return SignInState(failures, budget, float(row["now"]))

    def save_sign_in_state(
        self, address: str, failures: SignInFailures | None, budget: SignInBudget | None = None
    ) -> None:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.save_sign_in_state`."""
        if failures is None:
            self.execute(
                "DELETE FROM console_sign_ins WHERE address = :address", {"address": address}
            )
        else:
            self.execute(
                "INSERT INTO console_sign_ins (address, failures, last_failed, wait_until)"
                " VALUES (:address, :count, :last, :until) ON CONFLICT (address) DO UPDATE"
                " SET failures = excluded.failures, last_failed = excluded.last_failed,"
                " wait_until = excluded.wait_until",
                {
                    "address": address,
                    "count": failures.count,
                    "last": failures.last,
                    "until": failures.until,
                },
            )
        if budget is not None:
            self.execute(
                "UPDATE console_sign_in_budget SET tokens = :tokens, filled_at = :at WHERE id = 1",
                {"tokens": budget.tokens, "at": budget.filled_at},
            )

    def purge_console(self, *, batch: int, now: float | None = None) -> int:
        """See :meth:`rulekit.store.sessions.ConsoleSessions.purge_console`."""
        clock, params = self._clock(now)
        lock = self.dialect.skip_locked
        sessions = self.execute(
            "DELETE FROM console_sessions WHERE id IN (SELECT id FROM console_sessions"
            f" WHERE idle_until <= {clock} ORDER BY idle_until LIMIT :limit{lock})",
            {**params, "limit": batch},
        ).rowcount
        addresses = self.execute(
            "DELETE FROM console_sign_ins WHERE address IN (SELECT address FROM console_sign_ins"
            f" WHERE last_failed < {clock} - :forget ORDER BY last_failed LIMIT :limit{lock})",
            {**params, "limit": batch, "forget": SIGN_IN_FORGET_AFTER},
        ).rowcount
        return int(sessions) + int(addresses)


class PostgresConsoleSessions(SQLConsoleSessions):
    """Console statements on PostgreSQL: without ``now``, the database's clock."""

    def _clock(self, now: float | None) -> tuple[str, dict[str, Any]]:
        if now is None:
            return "extract(epoch FROM clock_timestamp())::double precision", {}
        return super()._clock(now)
