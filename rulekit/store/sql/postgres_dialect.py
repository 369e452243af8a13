"""PostgreSQL's dialect (:class:`PostgresDialect`): ``%(name)s`` parameters, ``timestamptz``
times, ``json`` columns read back as data, texts made storable (no NUL), and which of
psycopg's errors mean "the database cannot do this right now".

psycopg is imported only when a PostgreSQL store is used (the ``postgres`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rulekit.errors import StoreConflict, StoreUnavailable
from rulekit.store.records import utc
from rulekit.store.sql.dialect import Dialect, pyformat

# SQLSTATE classes that mean "the database cannot do this right now", not a bug: connection
# exceptions, rollbacks (deadlock, serialization), insufficient resources (disk full, too many
# connections), operator intervention (shutdown), system errors (I/O).
_UNAVAILABLE_CLASSES = ("08", "40", "53", "57", "58")
# read_only_sql_transaction (a hot standby), lock_not_available (waited past lock_timeout), the
# server ending a session whose transaction waited too long (idle_in_transaction_session_timeout,
# transaction_timeout): not a bug of the statement, the database is away for this transaction
_UNAVAILABLE_STATES = frozenset({"25006", "55P03", "25P03", "25P04"})
_CONFLICT_STATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected


def unavailable_error(where: str, exc: Exception) -> StoreUnavailable | None:
    """A :class:`StoreUnavailable` for ``exc`` when it means the database cannot be used right
    now (unreachable, shut down, disk full, read-only); ``None`` for anything else (a bug)."""
    import psycopg

    state = getattr(exc, "sqlstate", None)
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) or (
        state is not None and (state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES)
    ):
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if state in _CONFLICT_STATES:
            return StoreConflict(f"PostgreSQL store {where}: a conflict: {detail}")
        return StoreUnavailable(f"PostgreSQL store {where} cannot be used: {detail}")
    return None


_NUL_ESCAPE = re.compile(r"\\(?:\\|u0000)")


def storable_text(text: str) -> str:
    """``text`` as PostgreSQL can hold it. Its ``text`` cannot hold NUL, and ``->>`` cannot
    read a ``json`` document holding ``\\u0000`` (the JSON escape of NUL), anywhere in it:
    one client message holding NUL would break every search and erasure reading that table. So
    NUL becomes U+FFFD, and ``\\u0000`` its escape ``\\ufffd``, whoever wrote the text (a
    client, a rules file, a service's answer quoted in an error)."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if "\\u0000" in text:  # an escape, unless its backslash is itself escaped
        text = _NUL_ESCAPE.sub(lambda m: m.group() if m.group() == "\\\\" else "\\ufffd", text)
    return text


def _holds_nul(value: Any) -> bool:
    if type(value) is str:
        return "\x00" in value or "\\u0000" in value
    if type(value) is list:
        return any(_holds_nul(item) for item in value)
    return False


def _storable(value: Any) -> Any:
    if type(value) is str:
        return storable_text(value)
    if type(value) is list:
        return [_storable(item) for item in value]
    return value


class PostgresDialect(Dialect):
    """PostgreSQL through psycopg: ``%(name)s`` parameters, ``timestamptz`` times, ``json``
    columns read back as data, lists as arrays, rows locked while erasure rewrites them."""

    name = "PostgreSQL"
    for_update = " FOR UPDATE"
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def sql(self, statement: str) -> str:
        return pyformat(statement)

    def parameters(
        self, params: Sequence[Any] | Mapping[str, Any]
    ) -> Sequence[Any] | Mapping[str, Any]:
        """Texts without NUL (see :func:`storable_text`), in lists too."""
        if isinstance(params, Mapping):
            if any(_holds_nul(value) for value in params.values()):
                return {name: _storable(value) for name, value in params.items()}
        elif any(_holds_nul(value) for value in params):
            return [_storable(value) for value in params]
        return params

    def time(self, value: datetime | None) -> datetime | None:
        return None if value is None else utc(value)

    def read_time(self, value: Any) -> datetime | None:
        return None if value is None else utc(value)

    def read_json(self, value: Any) -> Any:
        return value  # psycopg decodes json columns

    def values(self, items: Sequence[Any]) -> list[Any]:
        return list(items)

    def one_of(self, column: str, parameter: str) -> str:
        return f"{column} = ANY(:{parameter})"

    def json_text(self, column: str, *path: str) -> str:
        *inner, last = path
        steps = "".join(f" -> '{step}'" for step in inner)
        return f"{column}{steps} ->> '{last}'"

    def text_length(self, column: str) -> str:
        return f"length(({column})::text)"

    def json_document(self, column: str) -> str:
        return f"({column})::json"

    def json_list_has(self, document: str, key: str, parameter: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM json_array_elements_text({document} -> '{key}') t"
            f" WHERE t = :{parameter})"
        )

    def bytes_contain(self, column: str, parameter: str) -> str:
        return f"position(:{parameter} in {column}) > 0"

    def unavailable(self, where: str, exc: Exception) -> StoreUnavailable | None:
        return unavailable_error(where, exc)

    @property
    def error(self) -> type[Exception]:
        import psycopg

        return psycopg.Error


POSTGRES = PostgresDialect()
