"""SQLite's dialect: ISO-8601 text times, JSON as text, lists as JSON arrays, and SQLite's
result codes for "cannot persist right now"."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rulekit.errors import StoreUnavailable
from rulekit.store.codec import from_json, from_ts, to_json, ts
from rulekit.store.sql.dialect import Dialect

# Primary result codes that mean the database cannot be used right now, not that the caller
# made a mistake (https://www.sqlite.org/rescode.html).
_UNAVAILABLE = frozenset(
    {
        sqlite3.SQLITE_PERM,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
        sqlite3.SQLITE_NOTADB,
    }
)
_HINTS = {
    sqlite3.SQLITE_READONLY: "is the file or its directory read-only?",
    sqlite3.SQLITE_CANTOPEN: "is the file or its directory missing or read-only?",
    sqlite3.SQLITE_FULL: "is the disk full?",
    sqlite3.SQLITE_BUSY: "another process held the database past the busy timeout",
    sqlite3.SQLITE_NOTADB: "is this a rulekit database?",
}


def unavailable_error(path: str | Path, exc: Exception) -> StoreUnavailable | None:
    """A :class:`StoreUnavailable` for ``exc`` when it means the database cannot be used right
    now (read-only, full, I/O, busy); ``None`` for anything else, which is a bug to re-raise."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _UNAVAILABLE:
        return None
    name = getattr(exc, "sqlite_errorname", "SQLITE_ERROR")
    message = f"SQLite store {path} cannot be used: {exc} ({name})"
    hint = _HINTS.get(code & 0xFF)
    return StoreUnavailable(f"{message}; {hint}" if hint else message)


class SQLiteDialect(Dialect):
    """SQLite: statements as written; times as ISO-8601 UTC text (text order is time order)."""

    name = "SQLite"

    def time(self, value: datetime | None) -> str | None:
        return ts(value)

    def read_time(self, value: Any) -> datetime | None:
        return from_ts(str(value)) if value is not None else None

    def read_json(self, value: Any) -> Any:
        return from_json(value)

    def values(self, items: Sequence[Any]) -> str:
        return to_json(list(items))

    def one_of(self, column: str, parameter: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(:{parameter}))"

    def by_index(self, index: str) -> str:
        # with no statistics (no ANALYZE), SQLite prefers an equality on `status` to the
        # range on the due time: 100,000 future-dated retries were read and sorted per claim
        return f"INDEXED BY {index}"

    def json_text(self, column: str, *path: str) -> str:
        return f"json_extract({column}, '$.{'.'.join(path)}')"

    def json_list_has(self, document: str, key: str, parameter: str) -> str:
        return (
            f"EXISTS (SELECT 1 FROM json_each({document}, '$.{key}') t"
            f" WHERE t.value = :{parameter})"
        )

    def bytes_contain(self, column: str, parameter: str) -> str:
        return f"instr({column}, :{parameter}) > 0"

    def unavailable(self, where: str, exc: Exception) -> StoreUnavailable | None:
        return unavailable_error(where, exc)

    @property
    def error(self) -> type[Exception]:
        return sqlite3.Error


SQLITE = SQLiteDialect()
