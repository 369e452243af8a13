"""Conversation state and the daemon's journal: the interface, its implementations, and the
storage URL of the config (``storage:``) that picks one.

* ``sqlite:///rulekit.sqlite3`` — a file relative to the config's directory (the default);
* ``sqlite:////var/lib/rulekit/rulekit.sqlite3`` — an absolute path (four slashes);
* ``sqlite:///rulekit.sqlite3?synchronous=normal`` — the opt-down from ``FULL`` durability;
* ``memory://`` — SQLite in memory, nothing kept when the process ends (tests, trials);
* ``postgresql://user@host:5432/db?schema=rulekit`` — several daemons on one database (the
  ``postgres`` extra: ``pip install 'rulekit[postgres]'``; see :mod:`rulekit.store.postgres`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from rulekit.errors import StoreError
from rulekit.store.base import Journal, JournaledState, JournaledStore, State, Store
from rulekit.store.memory import MemoryStore
from rulekit.store.migrations import SchemaStatus
from rulekit.store.records import Attempt, EventRecord, InboxItem, Job, JobSpec
from rulekit.store.urls import redact_url

SQLITE_OPTIONS = ("synchronous", "busy_timeout")


@dataclass(frozen=True)
class StorageURL:
    """A parsed storage URL."""

    scheme: str
    path: Path | None = None
    options: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    """The URL as written, for servers (PostgreSQL)."""


def parse_url(url: str, base_dir: str | os.PathLike[str]) -> StorageURL:
    """Parse a storage URL; relative SQLite paths are resolved against ``base_dir`` (the
    config file's directory). Messages show the URL without its password."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise StoreError(f"storage URL {shown!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme == "memory":
        if parts.netloc or parts.path or parts.query:
            raise StoreError(f"storage URL {shown!r}: write just 'memory://'")
        return StorageURL("memory")
    if scheme in ("postgresql", "postgres"):
        from rulekit.store.postgres import check_options, split_url

        _, options = split_url(url)
        check_options(url, options)
        return StorageURL("postgresql", options=options, url=url)
    if scheme != "sqlite":
        raise StoreError(
            f"storage URL {shown!r}: unknown scheme {parts.scheme!r}; "
            "use sqlite:///FILE (relative to the config), sqlite:////ABSOLUTE/PATH or memory://"
        )
    if parts.netloc:
        hint = urlsplit(shown)
        raise StoreError(
            f"storage URL {shown!r}: a SQLite URL has no host; write sqlite:///{hint.netloc}"
            f"{hint.path} for a relative path, or four slashes for an absolute one"
        )
    raw_path = unquote(parts.path)[1:]  # sqlite:///x -> "x", sqlite:////x -> "/x"
    if not raw_path:
        raise StoreError(f"storage URL {shown!r} names no file (e.g. sqlite:///rulekit.sqlite3)")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    for name in options:
        if name not in SQLITE_OPTIONS:
            raise StoreError(
                f"storage URL {shown!r}: unknown option {name!r} "
                f"(known: {', '.join(SQLITE_OPTIONS)})"
            )
    _check_sqlite_options(shown, options)
    path = Path(raw_path)
    return StorageURL("sqlite", path if path.is_absolute() else Path(base_dir) / path, options)


def _check_sqlite_options(shown: str, options: dict[str, str]) -> None:
    """The values of a SQLite URL's options, checked with the URL (``rulekit check`` reads
    the URL without opening the store): the same errors as opening it."""
    from rulekit.store.sqlite import SYNCHRONOUS_LEVELS

    level = options.get("synchronous", "FULL")
    if level.upper() not in SYNCHRONOUS_LEVELS:
        raise StoreError(
            f"storage URL {shown!r}: synchronous must be one of "
            f"{', '.join(SYNCHRONOUS_LEVELS)}, not {level!r}"
        )
    if "busy_timeout" in options:
        try:
            seconds = float(options["busy_timeout"])
        except ValueError:
            seconds = math.nan
        if not 0 <= seconds < math.inf:
            raise StoreError(
                f"storage URL {shown!r}: busy_timeout must be seconds (a number, 0 or more)"
            )


def open_store(
    url: str, base_dir: str | os.PathLike[str], *, upgrade: bool = True, writes: bool = True
) -> JournaledStore:
    """Open the store a storage URL names, applying pending migrations unless ``upgrade`` is
    false. ``writes=False``: only to be read (:meth:`JournaledStore.reading`), so a SQLite file
    is not checked for writes (which waits for a writer's transaction). Raises
    :class:`StoreError` for a bad URL or schema, :class:`StoreUnavailable` when the database
    cannot be opened or written."""
    parsed = parse_url(url, base_dir)
    if parsed.scheme == "memory":
        return MemoryStore()
    if parsed.scheme == "postgresql":
        from rulekit.store.postgres import PostgresStore

        assert parsed.url is not None
        return PostgresStore(parsed.url, upgrade=upgrade)
    from rulekit.store.sqlite import DEFAULT_BUSY_TIMEOUT, SQLiteStore

    busy_timeout = float(parsed.options.get("busy_timeout", DEFAULT_BUSY_TIMEOUT))
    assert parsed.path is not None
    return SQLiteStore(
        parsed.path,
        synchronous=parsed.options.get("synchronous", "FULL"),
        busy_timeout=busy_timeout,
        upgrade=upgrade,
        writes=writes,
    )


def schema_status(url: str, base_dir: str | os.PathLike[str]) -> SchemaStatus:
    """Where the schema of the store at ``url`` stands (``rulekit db status``); changes nothing."""
    parsed = parse_url(url, base_dir)
    if parsed.scheme == "memory":
        return SchemaStatus(current=0, latest=0)
    if parsed.scheme == "postgresql":
        from rulekit.store import postgres

        assert parsed.url is not None
        return postgres.schema_status(parsed.url)
    from rulekit.store import sqlite

    assert parsed.path is not None
    return sqlite.schema_status(parsed.path)


def upgrade_schema(url: str, base_dir: str | os.PathLike[str]) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply pending migrations (``rulekit db upgrade``); the status before and after."""
    parsed = parse_url(url, base_dir)
    if parsed.scheme == "memory":
        return SchemaStatus(current=0, latest=0), SchemaStatus(current=0, latest=0)
    if parsed.scheme == "postgresql":
        from rulekit.store import postgres

        assert parsed.url is not None
        return postgres.upgrade_schema(parsed.url)
    from rulekit.store import sqlite

    assert parsed.path is not None
    return sqlite.upgrade_schema(parsed.path)


__all__ = [
    "Attempt",
    "EventRecord",
    "InboxItem",
    "Job",
    "JobSpec",
    "Journal",
    "JournaledState",
    "JournaledStore",
    "MemoryStore",
    "SchemaStatus",
    "State",
    "StorageURL",
    "Store",
    "open_store",
    "parse_url",
    "schema_status",
    "upgrade_schema",
]
