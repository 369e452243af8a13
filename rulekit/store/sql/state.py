"""The SQL behind one transaction of a SQL store: conversation state (conversations, clients,
message marks, cooldowns), and the journal from the mixins of its own modules (``inbox``,
``outbox``, ``history``, ``timers``, ``presence``, ``stats``, ``requests``, ``sessions``).

:class:`SQLState` holds every statement once, written for both databases (see
:mod:`rulekit.store.sql.dialect`); a store's ``transaction()`` yields one, valid only inside its
``with`` block. Methods that need several statements here are one statement on PostgreSQL
(:class:`rulekit.store.sql.postgres.PostgresState`), whose data-modifying ``WITH`` SQLite lacks.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rulekit.errors import StoreError
from rulekit.event import Client, Conversation
from rulekit.store.base import JournaledState
from rulekit.store.listing import ConversationQuery, ConversationSummary
from rulekit.store.lookups import Found, Key, Lookups, SavedConversation, Saves, saved_conversation
from rulekit.store.records import (
    utc,
)
from rulekit.store.sql import erasure, listing
from rulekit.store.sql.dialect import Dialect, Row
from rulekit.store.sql.history import SQLHistory
from rulekit.store.sql.inbox import SQLInbox
from rulekit.store.sql.outbox import SQLOutbox
from rulekit.store.sql.presence import SQLPresence
from rulekit.store.sql.requests import SQLRequestKeys
from rulekit.store.sql.sessions import SQLConsoleSessions
from rulekit.store.sql.stats import SQLStats
from rulekit.store.sql.timers import SQLTimers
from rulekit.store.state import free_places

LOG_KEY = "log-id:key"
"""The position holding the store's key for the log's hashes (:meth:`SQLState.log_key`)."""
_BY_ID = "SELECT key, data FROM conversations WHERE id = :id AND channel = :channel LIMIT 1"
_CLIENT = "SELECT data FROM clients WHERE channel = :channel AND id = :id"
_CONVERSATION_AND_CLIENT = (
    "SELECT 'conversation' AS kind, id, data FROM conversations"
    " WHERE channel = :channel AND key = :key"
    " UNION ALL SELECT 'client' AS kind, NULL, data FROM clients"
    " WHERE channel = :channel AND id = :key"
)


class SQLState(
    SQLInbox,
    SQLOutbox,
    SQLHistory,
    SQLTimers,
    SQLPresence,
    SQLStats,
    SQLRequestKeys,
    SQLConsoleSessions,
    JournaledState,
):
    """One open transaction of a SQL store."""

    def __init__(self, conn: Any, where: str, dialect: Dialect) -> None:
        self.conn = conn
        self.where = where
        """The store, for messages (a path, a URL without its password)."""
        self.dialect = dialect
        self.active = True
        self.statements = 0
        """Statements run (each one round trip to a server), for benchmarks."""
        self.wrote: bool | None = None
        """Once committed: whether the transaction changed a row (None: the store cannot tell).
        Only such a commit shows that the store can persist again (a full disk still lets a
        transaction that only reads commit)."""

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Any:
        """Run one statement (``:name`` parameters), turning "cannot persist" errors into
        :class:`~rulekit.errors.StoreUnavailable`; the driver's cursor."""
        if not self.active:
            raise StoreError("this transaction has ended; use the state only inside its block")
        self.statements += 1
        try:
            return self.conn.execute(self.dialect.sql(sql), self.dialect.parameters(params))
        except self.dialect.error as exc:
            unavailable = self.dialect.unavailable(self.where, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def execute_many(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> Any:
        """Run one statement once for each row of parameters, in order, in one call into the
        driver (SQLite: no Python between the rows); the driver's cursor, whose ``rowcount``
        counts the rows changed by all of them. Nothing is run for no rows."""
        if not self.active:
            raise StoreError("this transaction has ended; use the state only inside its block")
        cursor = self.conn.cursor()
        if not rows:
            return cursor
        self.statements += 1
        parameters = self.dialect.parameters
        try:
            cursor.executemany(self.dialect.sql(sql), [parameters(row) for row in rows])
        except self.dialect.error as exc:
            unavailable = self.dialect.unavailable(self.where, exc)
            if unavailable is None:
                raise
            raise unavailable from exc
        return cursor

    def _one(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Row | None:
        return self.execute(sql, params).fetchone()

    # conversations ---------------------------------------------------------------------------
    def get_conversation(self, channel: str, key: str) -> Conversation | None:
        row = self._one(
            "SELECT data FROM conversations WHERE channel = :channel AND key = :key",
            {"channel": channel, "key": key},
        )
        return Conversation.model_validate_json(row["data"]) if row else None

    def save_conversation(self, channel: str, key: str, conversation: Conversation) -> None:
        saved = saved_conversation(conversation)
        self.execute(_SAVE_CONVERSATION, _conversation_row(channel, key, saved, self._now()))

    def _now(self) -> Any:
        return self.dialect.time(utc())

    def find_conversation(
        self, channel: str, conversation_id: str
    ) -> tuple[str, Conversation] | None:
        found = self.conversation_by_id_text(channel, conversation_id)
        return (found[0], Conversation.model_validate_json(found[1])) if found else None

    def conversation_by_id_text(self, channel: str, conversation_id: str) -> tuple[str, str] | None:
        """:meth:`find_conversation` 's answer with the conversation as its stored JSON."""
        row = self._one(_BY_ID, {"id": conversation_id, "channel": channel})
        return (row["key"], row["data"]) if row else None

    def list_conversations(self, query: ConversationQuery) -> list[ConversationSummary]:
        return listing.list_conversations(self, query)

    def open_conversations_by_assignee(self, channel: str | None = None) -> dict[str, int]:
        rows = self.execute(
            "SELECT assignee, COUNT(*) AS n FROM conversations"
            # no status (a generic webhook channel's) is open until closed; the same terms as
            # the partial index conversations_unclosed_by_assignee, so that it is used
            " WHERE assignee IS NOT NULL AND (status IS NULL OR status <> 'closed')"
            " AND (CAST(:channel AS TEXT) IS NULL OR channel = :channel) GROUP BY assignee",
            {"channel": channel},
        )
        return {row["assignee"]: row["n"] for row in rows}

    # clients ---------------------------------------------------------------------------------
    def get_client(self, channel: str, client_id: str) -> Client | None:
        row = self._one(_CLIENT, {"channel": channel, "id": client_id})
        return Client.model_validate_json(row["data"]) if row else None

    def get_conversation_and_client(
        self, channel: str, key: str
    ) -> tuple[Conversation | None, Client | None]:
        conversation, client = self.conversation_and_client_text(channel, key)
        return (
            Conversation.model_validate_json(conversation) if conversation else None,
            Client.model_validate_json(client) if client else None,
        )

    def conversation_and_client_text(self, channel: str, key: str) -> tuple[str | None, str | None]:
        """:meth:`get_conversation_and_client` 's answer as the stored JSON of each."""
        rows = self.execute(_CONVERSATION_AND_CLIENT, {"channel": channel, "key": key}).fetchall()
        found = {row["kind"]: row["data"] for row in rows}
        return found.get("conversation"), found.get("client")

    def save_client(self, channel: str, client: Client) -> None:
        if client.id is None:
            raise ValueError("a client without an id cannot be stored")
        self.execute(
            _SAVE_CLIENT,
            {
                "channel": channel,
                "id": client.id,
                "data": client.model_dump_json(),
                "now": self._now(),
            },
        )

    # messages --------------------------------------------------------------------------------
    def mark_message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "INSERT INTO seen_messages (channel, message_id, seen_at)"
            " VALUES (:channel, :message, :now) ON CONFLICT DO NOTHING RETURNING 1 AS new",
            {"channel": channel, "message": message_id, "now": self.dialect.time(utc())},
        )
        return row is not None

    def mark_messages_seen(self, channel: str, message_ids: Sequence[str]) -> list[bool]:
        if len(message_ids) <= 1:
            return [self.mark_message_seen(channel, m) for m in message_ids]
        new: set[str] = set()
        now = self.dialect.time(utc())
        for chunk in _chunks(list(dict.fromkeys(message_ids))):
            params = _numbered(chunk, channel=channel, now=now)
            rows = self.execute(
                "INSERT INTO seen_messages (channel, message_id, seen_at) VALUES "
                + ", ".join(f"(:channel, :m{index}, :now)" for index in range(len(chunk)))
                + " ON CONFLICT DO NOTHING RETURNING message_id",
                params,
            ).fetchall()
            new.update(row["message_id"] for row in rows)
        answers = []
        for message_id in message_ids:
            answers.append(message_id in new)
            new.discard(message_id)  # given again, it is not new
        return answers

    def seen_messages(self, channel: str, message_ids: Sequence[str]) -> set[str]:
        seen: set[str] = set()
        for chunk in _chunks(list(dict.fromkeys(message_ids))):
            rows = self.execute(
                "SELECT message_id FROM seen_messages WHERE channel = :channel AND message_id IN ("
                + ", ".join(f":m{index}" for index in range(len(chunk)))
                + ")",
                _numbered(chunk, channel=channel),
            ).fetchall()
            seen.update(row["message_id"] for row in rows)
        return seen

    def message_seen(self, channel: str, message_id: str) -> bool:
        row = self._one(
            "SELECT 1 AS seen FROM seen_messages WHERE channel = :channel"
            " AND message_id = :message",
            {"channel": channel, "message": message_id},
        )
        return row is not None

    # in batches ------------------------------------------------------------------------------
    def read_many(self, wanted: Lookups, *, hold: bool = False) -> Found:
        """The stored JSON as it is, where :meth:`State.read_many
        <rulekit.store.base.State.read_many>` would read each model and write it out again: a
        key asked for both as a conversation and as a client in one query, each other key in
        one, the message marks of a channel in one. ``hold`` needs nothing here: SQLite runs
        one writing transaction at a time (PostgreSQL's holds its rows: ``PostgresLookups``)."""
        found = Found()
        both = wanted.conversations & wanted.clients if wanted.clients else set()
        for channel, key in both:
            rows = self.execute(_CONVERSATION_AND_CLIENT, {"channel": channel, "key": key})
            kept = {row["kind"]: (row["id"], row["data"]) for row in rows}
            found.conversations[channel, key] = kept.get("conversation")
            client = kept.get("client")
            found.clients[channel, key] = client[1] if client is not None else None
        for channel, key in wanted.conversations - both if wanted.conversations else ():
            row = self._one(
                "SELECT id, data FROM conversations WHERE channel = :channel AND key = :key",
                {"channel": channel, "key": key},
            )
            found.conversations[channel, key] = (row["id"], row["data"]) if row else None
        for channel, conversation_id in wanted.conversation_ids:
            row = self._one(_BY_ID, {"id": conversation_id, "channel": channel})
            by_id = (row["key"], row["data"]) if row else None
            found.conversation_ids[channel, conversation_id] = by_id
        for channel, client_id in wanted.clients - both if wanted.clients else ():
            row = self._one(_CLIENT, {"channel": channel, "id": client_id})
            found.clients[channel, client_id] = row["data"] if row else None
        if wanted.messages:
            by_channel: dict[str, list[str]] = {}
            for channel, message_id in wanted.messages:
                by_channel.setdefault(channel, []).append(message_id)
            for channel, message_ids in by_channel.items():
                seen = self.seen_messages(channel, message_ids)
                for message_id in message_ids:
                    found.messages[channel, message_id] = message_id in seen
        return found

    def write_many(self, saves: Saves) -> set[Key]:
        """Each kind of row in one call into the driver (SQLite: no Python between the rows),
        the JSON written as it is; the message marks of a channel in one statement."""
        now = self._now()
        self.execute_many(
            _SAVE_CONVERSATION,
            [
                _conversation_row(channel, key, saved, now)
                for (channel, key), saved in sorted(saves.conversations.items())
            ],
        )
        self.execute_many(
            _SAVE_CLIENT,
            [
                {"channel": channel, "id": client_id, "data": data, "now": now}
                for (channel, client_id), data in sorted(saves.clients.items())
            ],
        )
        by_channel: dict[str, list[str]] = {}
        for channel, message_id in sorted(saves.messages):
            by_channel.setdefault(channel, []).append(message_id)
        seen_before: set[Key] = set()
        for channel, message_ids in by_channel.items():
            new = self.mark_messages_seen(channel, message_ids)
            seen_before.update(
                (channel, message_id)
                for message_id, marked in zip(message_ids, new, strict=True)
                if not marked
            )
        return seen_before

    # rule guards -----------------------------------------------------------------------------
    def cooldown_until(self, rule: str, conversation_id: str) -> datetime | None:
        row = self._one(
            "SELECT until FROM cooldowns WHERE rule = :rule AND conversation_id = :conversation",
            {"rule": rule, "conversation": conversation_id},
        )
        return self.dialect.read_time(row["until"]) if row else None

    def cooldowns_of(self, conversation_id: str) -> dict[str, datetime]:
        rows = self.execute(
            "SELECT rule, until FROM cooldowns WHERE conversation_id = :conversation",
            {"conversation": conversation_id},
        ).fetchall()
        return {row["rule"]: self.dialect.read_time(row["until"]) for row in rows}

    def cooldowns_for(self, conversation_ids: Sequence[str]) -> dict[str, dict[str, datetime]]:
        marks: dict[str, dict[str, datetime]] = {
            conversation: {} for conversation in conversation_ids
        }
        if not marks:
            return marks
        rows = self.execute(
            "SELECT conversation_id, rule, until FROM cooldowns"
            f" WHERE {self.dialect.one_of('conversation_id', 'ids')}",
            {"ids": self.dialect.values(list(marks))},
        )
        for row in rows:
            marks[row["conversation_id"]][row["rule"]] = self.dialect.read_time(row["until"])
        return marks

    def set_cooldown(self, rule: str, conversation_id: str, until: datetime) -> None:
        self.execute(
            "INSERT INTO cooldowns (rule, conversation_id, until)"
            " VALUES (:rule, :conversation, :until)"
            " ON CONFLICT (rule, conversation_id) DO UPDATE SET until = excluded.until",
            {"rule": rule, "conversation": conversation_id, "until": self.dialect.time(until)},
        )

    def log_key(self, *, make: bool = False) -> bytes | None:
        if make:  # (a position no group can name: theirs begin with "assign:")
            self.execute(
                "INSERT INTO positions (key, value) VALUES (:key, :value)"
                " ON CONFLICT (key) DO NOTHING",
                {"key": LOG_KEY, "value": secrets.randbits(62)},
            )
        row = self._one("SELECT value FROM positions WHERE key = :key", {"key": LOG_KEY})
        return None if row is None else int(row["value"]).to_bytes(8, "big")

    def next_position(self, key: str, modulo: int) -> int:
        # The upsert takes the row lock: two processes advancing one counter are serialized by
        # the database and each gets its own value.
        row = self._one(
            "INSERT INTO positions (key, value) VALUES (:key, 1)"
            " ON CONFLICT (key) DO UPDATE SET value = positions.value + 1"
            " RETURNING value - 1 AS previous",
            {"key": key},
        )
        assert row is not None
        return int(row["previous"]) % modulo if modulo > 0 else 0

    def next_free_position(self, key: str, size: int, free: Sequence[int]) -> int:
        # One upsert, under the row lock as next_position: the counter moves past the places
        # skipped (those not free) and the first free one in a single step, however many.
        places = sorted(free_places(size, free))
        params: dict[str, Any] = {"key": key, "size": size, "first": places[0] + 1}
        params.update((f"f{index}", place) for index, place in enumerate(places))
        listed = ", ".join(f"(:f{index})" for index in range(len(places)))
        row = self._one(
            "INSERT INTO positions (key, value) VALUES (:key, :first)"
            " ON CONFLICT (key) DO UPDATE SET value = positions.value + 1 + ("
            "SELECT MIN((free.column1 - positions.value % :size + :size) % :size)"
            f" FROM (VALUES {listed}) AS free) RETURNING value",
            params,
        )
        assert row is not None
        return (int(row["value"]) - 1) % size

    # privacy and retention -------------------------------------------------------------------
    def forget_client(self, client_id: str, *, channel: str | None = None) -> dict[str, int]:
        return erasure.forget_client(self, client_id, channel)

    def purge(
        self, *, events_before: datetime, payloads_before: datetime, batch: int | None = None
    ) -> dict[str, int]:
        return erasure.purge(self, events_before, payloads_before, batch)


_SAVE_CONVERSATION = (
    "INSERT INTO conversations (channel, key, id, status, assignee, data, updated_at,"
    " active_at) VALUES (:channel, :key, :id, :status, :assignee, :data, :now, :now)"
    " ON CONFLICT (channel, key) DO UPDATE SET id = excluded.id,"
    " status = excluded.status, assignee = excluded.assignee, data = excluded.data,"
    " updated_at = excluded.updated_at"
)
_SAVE_CLIENT = (
    "INSERT INTO clients (channel, id, data, updated_at)"
    " VALUES (:channel, :id, :data, :now)"
    " ON CONFLICT (channel, id) DO UPDATE SET data = excluded.data,"
    " updated_at = excluded.updated_at"
)


def _conversation_row(channel: str, key: str, saved: SavedConversation, now: Any) -> dict[str, Any]:
    return {
        "channel": channel,
        "key": key,
        "id": saved.id,
        "status": saved.status,
        "assignee": saved.assignee,
        "data": saved.data,
        "now": now,
    }


_CHUNK = 500
"""Most values one statement binds (SQLite and PostgreSQL bind at least tens of thousands)."""


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[start : start + _CHUNK] for start in range(0, len(values), _CHUNK)]


def _numbered(values: list[str], **params: Any) -> dict[str, Any]:
    """``params`` with ``values`` as ``m0``, ``m1``... (for a statement's list of values)."""
    params.update((f"m{index}", value) for index, value in enumerate(values))
    return params
