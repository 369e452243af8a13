"""Conversations, clients and message marks read and written in batches on PostgreSQL: a
round of webhooks reads its state in one query and writes it in one statement (see
:mod:`rulekit.store.lookups`), where one statement per call would be a round trip each.

SQLite, in the process, answers the batches call by call (the defaults of
:class:`~rulekit.store.base.State`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rulekit.store.codec import to_json
from rulekit.store.lookups import Found, Key, Lookups, Saves
from rulekit.store.records import utc

# Each kind of lookup is a list of (channel, name) pairs joined to its table; a missing row is
# missing from the answer. Conversations by id take one row per id, as find_conversation does.
_READ = (
    "SELECT 'conversation' AS kind, w.channel, w.name, c.id, c.data"
    " FROM unnest(:c_channels::text[], :c_names::text[]) AS w(channel, name)"
    " JOIN conversations c ON c.channel = w.channel AND c.key = w.name"
    " UNION ALL"
    " SELECT 'id', w.channel, w.name, c.key, c.data"
    " FROM unnest(:i_channels::text[], :i_names::text[]) AS w(channel, name)"
    " CROSS JOIN LATERAL (SELECT key, data FROM conversations c"
    "  WHERE c.id = w.name AND c.channel = w.channel LIMIT 1) c"
    " UNION ALL"
    " SELECT 'client', w.channel, w.name, NULL, k.data"
    " FROM unnest(:l_channels::text[], :l_names::text[]) AS w(channel, name)"
    " JOIN clients k ON k.channel = w.channel AND k.id = w.name"
    " UNION ALL"
    " SELECT 'message', w.channel, w.name, NULL, NULL"
    " FROM unnest(:m_channels::text[], :m_names::text[]) AS w(channel, name)"
    " JOIN seen_messages s ON s.channel = w.channel AND s.message_id = w.name"
)

# The same, with the conversations and clients found locked until the transaction ends (for a
# transaction that writes back what it read: see State.read_many). A row another transaction
# changed is waited for and read as it committed; the rows are locked in key order, as written.
_READ_HOLDING = (
    "WITH c AS (SELECT w.channel, w.name, t.id, t.data"
    " FROM unnest(:c_channels::text[], :c_names::text[]) AS w(channel, name)"
    " JOIN conversations t ON t.channel = w.channel AND t.key = w.name"
    " ORDER BY t.channel, t.key FOR UPDATE OF t),"
    " i AS (SELECT w.channel, w.name, t.key, t.data"
    " FROM unnest(:i_channels::text[], :i_names::text[]) AS w(channel, name)"
    " CROSS JOIN LATERAL (SELECT key, data FROM conversations c"
    "  WHERE c.id = w.name AND c.channel = w.channel LIMIT 1 FOR UPDATE) t),"
    " l AS (SELECT w.channel, w.name, k.data"
    " FROM unnest(:l_channels::text[], :l_names::text[]) AS w(channel, name)"
    " JOIN clients k ON k.channel = w.channel AND k.id = w.name"
    " ORDER BY k.channel, k.id FOR UPDATE OF k)"
    " SELECT 'conversation' AS kind, channel, name, id, data FROM c"
    " UNION ALL SELECT 'id', channel, name, key, data FROM i"
    " UNION ALL SELECT 'client', channel, name, NULL, data FROM l"
    " UNION ALL"
    " SELECT 'message', w.channel, w.name, NULL, NULL"
    " FROM unnest(:m_channels::text[], :m_names::text[]) AS w(channel, name)"
    " JOIN seen_messages s ON s.channel = w.channel AND s.message_id = w.name"
)

# A conversation or client the holding read found absent has no row to lock: two transactions
# creating it at once would both write it, the later over the other. Each takes a lock on its
# key instead (advisory, held until the transaction ends, in key order), then reads it again
# (a new statement: one that committed it meanwhile is seen, and its row locked). A job stores a
# conversation it finds by id under that id as its key (``actions.conversation.load``), so an
# id and a key take the same lock. Only when something is absent: two statements more.
_ABSENT_LOCK = 0x6E657721  # "new!"
_LOCK_ABSENT = (
    "SELECT count(pg_advisory_xact_lock(:lock, hashtext(w.kind || chr(31) || w.channel"
    "  || chr(31) || w.name)))"
    " FROM (SELECT DISTINCT * FROM unnest(:kinds::text[], :channels::text[], :names::text[])"
    "  AS w(kind, channel, name) ORDER BY 1, 2, 3) w"
)

# Rows in key order, so two daemons writing the same rows lock them in the same order.
_WRITE = (
    "WITH c AS (INSERT INTO conversations (channel, key, id, status, assignee, data,"
    "  updated_at, active_at)"
    " SELECT w.channel, w.key, w.id, w.status, w.assignee, w.data::text, :now, :now"
    " FROM json_to_recordset(:conversations::json) AS w(channel text, key text, id text,"
    "  status text, assignee text, data json)"
    " ORDER BY w.channel, w.key"
    " ON CONFLICT (channel, key) DO UPDATE SET id = excluded.id, status = excluded.status,"
    "  assignee = excluded.assignee, data = excluded.data, updated_at = excluded.updated_at"
    " RETURNING 1),"
    " l AS (INSERT INTO clients (channel, id, data, updated_at)"
    " SELECT w.channel, w.id, w.data::text, :now"
    " FROM json_to_recordset(:clients::json) AS w(channel text, id text, data json)"
    " ORDER BY w.channel, w.id"
    " ON CONFLICT (channel, id) DO UPDATE SET data = excluded.data,"
    "  updated_at = excluded.updated_at RETURNING 1),"
    " m AS (INSERT INTO seen_messages (channel, message_id, seen_at)"
    " SELECT w.channel, w.message, :now"
    " FROM unnest(:m_channels::text[], :m_ids::text[]) AS w(channel, message)"
    " ORDER BY w.channel, w.message"
    " ON CONFLICT DO NOTHING RETURNING channel, message_id)"
    # (every data-modifying WITH runs to completion, read or not)
    " SELECT channel, message_id FROM m"
)


def _pairs(prefix: str, keys: Any) -> dict[str, list[str]]:
    ordered = sorted(keys)
    return {
        f"{prefix}_channels": [channel for channel, _ in ordered],
        f"{prefix}_names": [name for _, name in ordered],
    }


class PostgresLookups:
    """The batches of :class:`~rulekit.store.sql.postgres.PostgresState`: one statement each."""

    execute: Callable[..., Any]
    """Provided by :class:`~rulekit.store.sql.state.SQLState`."""

    def read_many(self, wanted: Lookups, *, hold: bool = False) -> Found:
        found = Found(
            dict.fromkeys(wanted.conversations),
            dict.fromkeys(wanted.conversation_ids),
            dict.fromkeys(wanted.clients),
            dict.fromkeys(wanted.messages, False),
        )
        if not wanted:
            return found
        self._read_into(found, wanted, hold=hold)
        if hold:
            absent = Lookups(
                {key for key, kept in found.conversations.items() if kept is None},
                {key for key, kept in found.conversation_ids.items() if kept is None},
                {key for key, kept in found.clients.items() if kept is None},
            )
            if absent:
                keys = sorted(
                    [("conversation", *key) for key in absent.conversations]
                    + [("conversation", *key) for key in absent.conversation_ids]
                    + [("client", *key) for key in absent.clients]
                )
                self.execute(
                    _LOCK_ABSENT,
                    {
                        "lock": _ABSENT_LOCK,
                        "kinds": [kind for kind, _, _ in keys],
                        "channels": [channel for _, channel, _ in keys],
                        "names": [name for _, _, name in keys],
                    },
                )
                self._read_into(found, absent, hold=True)
        return found

    def _read_into(self, found: Found, wanted: Lookups, *, hold: bool) -> None:
        rows = self.execute(
            _READ_HOLDING if hold else _READ,
            _pairs("c", wanted.conversations)
            | _pairs("i", wanted.conversation_ids)
            | _pairs("l", wanted.clients)
            | _pairs("m", wanted.messages),
        ).fetchall()
        for row in rows:
            key: Key = (row["channel"], row["name"])
            kind = row["kind"]
            if kind == "conversation":
                found.conversations[key] = (row["id"], row["data"])
            elif kind == "id":
                found.conversation_ids[key] = (row["id"], row["data"])
            elif kind == "client":
                found.clients[key] = row["data"]
            else:
                found.messages[key] = True

    def write_many(self, saves: Saves) -> set[Key]:
        if not saves:
            return set()
        conversations = sorted(saves.conversations.items())
        clients = sorted(saves.clients.items())
        messages = sorted(saves.messages)
        rows = self.execute(
            _WRITE,
            {
                "now": utc(),
                # one JSON document each: the records (JSON already) go in as they are, where a
                # list parameter would escape them character by character
                "conversations": "["
                + ",".join(
                    f'{{"channel":{to_json(channel)},"key":{to_json(key)},'
                    f'"id":{to_json(saved.id)},"status":{to_json(saved.status)},'
                    f'"assignee":{to_json(saved.assignee)},"data":{saved.data}}}'
                    for (channel, key), saved in conversations
                )
                + "]",
                "clients": "["
                + ",".join(
                    f'{{"channel":{to_json(channel)},"id":{to_json(client_id)},"data":{data}}}'
                    for (channel, client_id), data in clients
                )
                + "]",
                "m_channels": [channel for channel, _ in messages],
                "m_ids": [message_id for _, message_id in messages],
            },
        ).fetchall()
        marked = {(row["channel"], row["message_id"]) for row in rows}
        return set(messages) - marked
