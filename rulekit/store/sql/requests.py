"""The ledger of request keys in a SQL store (:mod:`rulekit.store.requests`): one row per key,
shared by every daemon on the store.

A claim is an insert that does nothing when the key is there: on PostgreSQL a claim racing
another one of the same key waits for it to commit, then reads its row, so only one of them is
new. ``id`` orders the keys by first use: the oldest beyond the bound go first. ``status`` is
null while the request is in flight; ``used_at`` is then when it was claimed, and taking over
a lost claim is an update that sets it only while it is still older than
:data:`~rulekit.store.requests.IN_FLIGHT`, so of two retries at once one takes it over.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rulekit.store.records import utc
from rulekit.store.requests import IN_FLIGHT, KEEP, MAX_ANSWER, MAX_KEYS, KeptRequest

WHERE_KEY = "who = :who AND key = :key"


class SQLRequestKeys:
    """Request-key statements, mixed into :class:`~rulekit.store.sql.state.SQLState`."""

    dialect: Any

    def execute(self, sql: str, params: Any = ()) -> Any:  # provided by SQLState
        raise NotImplementedError

    def claim_request_key(
        self,
        who: str,
        key: str,
        fingerprint: str,
        conversation_id: str,
        *,
        now: datetime | None = None,
    ) -> KeptRequest | None:
        """See :meth:`rulekit.store.requests.RequestKeys.claim_request_key`."""
        moment = utc(now)
        self.execute(
            "DELETE FROM request_keys WHERE used_at < :oldest",
            {"oldest": self.dialect.time(moment - KEEP)},
        )
        inserted = self.execute(
            "INSERT INTO request_keys (who, key, fingerprint, conversation_id, used_at)"
            " VALUES (:who, :key, :fingerprint, :conversation, :now)"
            " ON CONFLICT (who, key) DO NOTHING",
            {
                "who": who,
                "key": key,
                "fingerprint": fingerprint,
                "conversation": conversation_id,
                "now": self.dialect.time(moment),
            },
        )
        if inserted.rowcount == 1:
            self.execute(
                "DELETE FROM request_keys WHERE id <= (SELECT id FROM request_keys"
                " ORDER BY id DESC LIMIT 1 OFFSET :keep)",
                {"keep": MAX_KEYS},
            )
            return None
        row = self.execute(
            f"SELECT fingerprint, status, answer FROM request_keys WHERE {WHERE_KEY}",
            {"who": who, "key": key},
        ).fetchone()
        if row is None:  # let go between the two statements (a purge): take it anew
            return self.claim_request_key(who, key, fingerprint, conversation_id, now=now)
        if row["status"] is None:  # in flight, or lost with its daemon
            if row["fingerprint"] == fingerprint and self._take_over(who, key, moment):
                return None
            return KeptRequest(row["fingerprint"], in_flight=True)
        answer = None if row["answer"] is None else (int(row["status"]), bytes(row["answer"]))
        return KeptRequest(row["fingerprint"], answer)

    def _take_over(self, who: str, key: str, moment: datetime) -> bool:
        """Claim anew a key whose request has been in flight for longer than IN_FLIGHT."""
        taken = self.execute(
            f"UPDATE request_keys SET used_at = :now WHERE {WHERE_KEY}"
            " AND status IS NULL AND used_at < :stale",
            {
                "who": who,
                "key": key,
                "now": self.dialect.time(moment),
                "stale": self.dialect.time(moment - IN_FLIGHT),
            },
        )
        return bool(taken.rowcount == 1)

    def finish_request_key(
        self, who: str, key: str, status: int, body: bytes | None = None
    ) -> None:
        """See :meth:`rulekit.store.requests.RequestKeys.finish_request_key`."""
        kept = body if body is not None and len(body) <= MAX_ANSWER else None
        self.execute(
            f"UPDATE request_keys SET status = :status, answer = :answer WHERE {WHERE_KEY}",
            {"who": who, "key": key, "status": status, "answer": kept},
        )

    def release_request_key(self, who: str, key: str) -> None:
        """See :meth:`rulekit.store.requests.RequestKeys.release_request_key`."""
        self.execute(
            "DELETE FROM request_keys WHERE who = :who AND key = :key", {"who": who, "key": key}
        )

    def forget_request_answers(self, conversation_ids: list[str]) -> int:
        """Forget the keys (and answers) of requests about ``conversation_ids`` (erasure)."""
        if not conversation_ids:
            return 0
        cursor = self.execute(
            f"DELETE FROM request_keys WHERE {self.dialect.one_of('conversation_id', 'ids')}",
            {"ids": self.dialect.values(conversation_ids)},
        )
        return int(cursor.rowcount)
