"""What differs between the SQL databases rulekit stores in, and nothing else.

Statements are written once, in SQLite's named-parameter style (``:name``) and in SQL both
databases accept; a :class:`Dialect` rewrites the parameters for its driver, encodes and
decodes the values whose storage differs (times, JSON, lists) and supplies the few fragments
that cannot be written the same way.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from rulekit.errors import StoreUnavailable
from rulekit.store.codec import to_json

Row = Any
"""A row of the driver (``sqlite3.Row`` or a psycopg dict): columns by name."""


def _name_char(char: str) -> bool:
    return char.isalnum() or char == "_"


@lru_cache(maxsize=512)
def pyformat(statement: str) -> str:
    """``statement`` with ``:name`` parameters written ``%(name)s`` (and ``%`` doubled), as
    psycopg takes them; ``::type`` casts are left alone."""
    out: list[str] = []
    i, end = 0, len(statement)
    while i < end:
        char = statement[i]
        starts_name = i + 1 < end and (statement[i + 1].isalpha() or statement[i + 1] == "_")
        if (
            char == ":"
            and starts_name
            and (i == 0 or not (_name_char(statement[i - 1]) or statement[i - 1] == ":"))
        ):
            j = i + 1
            while j < end and _name_char(statement[j]):
                j += 1
            out.append(f"%({statement[i + 1 : j]})s")
            i = j
            continue
        out.append("%%" if char == "%" else char)
        i += 1
    return "".join(out)


class Dialect(abc.ABC):
    """How one database differs from the SQL of :class:`~rulekit.store.sql.state.SQLState`."""

    name: str
    """The database, for messages (``SQLite``, ``PostgreSQL``)."""

    for_update: str = ""
    skip_locked: str = ""
    """Appended to the reads that claim work (timers): several daemons claiming at once each
    skip the rows another is claiming, instead of waiting for them."""
    """Appended to the reads that erasure rewrites: locks the rows where several daemons could
    change them meanwhile."""

    def sql(self, statement: str) -> str:
        """``statement`` as the driver takes it."""
        return statement

    def parameters(
        self, params: Sequence[Any] | Mapping[str, Any]
    ) -> Sequence[Any] | Mapping[str, Any]:
        """A statement's parameters as the database can hold them (as they are, by default)."""
        return params

    # values ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def time(self, value: datetime | None) -> Any:
        """A time as a parameter (``None`` stays ``None``)."""

    @abc.abstractmethod
    def read_time(self, value: Any) -> Any:
        """A stored time back, timezone-aware (``None`` stays ``None``)."""

    def json(self, value: Any) -> str | None:
        """JSON data as a parameter (``None`` stays ``None``): compact text, which both a text
        column and PostgreSQL's ``json`` take."""
        return None if value is None else to_json(value)

    @abc.abstractmethod
    def read_json(self, value: Any) -> Any:
        """A JSON column's value back as JSON data."""

    @abc.abstractmethod
    def values(self, items: Sequence[Any]) -> Any:
        """A list as the parameter of :meth:`one_of`."""

    # fragments -------------------------------------------------------------------------------
    def by_index(self, index: str) -> str:
        """Written after a table (and its alias) in ``FROM``: read it through ``index``, where
        a planner without statistics would pick another index and sort every row it holds
        (nothing where the planner is left to choose)."""
        return ""

    @abc.abstractmethod
    def one_of(self, column: str, parameter: str) -> str:
        """``column`` is one of the list in ``:parameter`` (see :meth:`values`)."""

    @abc.abstractmethod
    def json_text(self, column: str, *path: str) -> str:
        """The text at ``path`` in the JSON document ``column``."""

    def text_length(self, column: str) -> str:
        """The length of the text or JSON ``column`` (its characters)."""
        return f"length({column})"

    def json_document(self, column: str) -> str:
        """A text column holding JSON, as a JSON document :meth:`json_text` and
        :meth:`json_list_has` read."""
        return column

    @abc.abstractmethod
    def json_list_has(self, document: str, key: str, parameter: str) -> str:
        """The list at ``key`` of the JSON ``document`` holds the text in ``:parameter``."""

    @abc.abstractmethod
    def bytes_contain(self, column: str, parameter: str) -> str:
        """The bytes of ``column`` contain the bytes in ``:parameter``."""

    # errors ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def unavailable(self, where: str, exc: Exception) -> StoreUnavailable | None:
        """A :class:`StoreUnavailable` when ``exc`` means the database cannot be used right now
        (``where`` names the store); ``None`` for anything else, a bug to re-raise."""

    @property
    @abc.abstractmethod
    def error(self) -> type[Exception]:
        """The driver's base error class."""
