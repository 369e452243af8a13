"""``rulekit db status`` and ``rulekit db upgrade``: the store's schema version, for any storage
URL :func:`rulekit.store.open_store` supports."""

from __future__ import annotations

from typing import Any

from rulekit.config import Config
from rulekit.store import SchemaStatus, parse_url, schema_status, upgrade_schema
from rulekit.store.urls import redact_url


def where(config: Config) -> str:
    """The store, named for output (a SQLite path, or the URL without its password)."""
    parsed = parse_url(config.raw.storage, config.base_dir)
    if parsed.path is not None:
        return str(parsed.path)
    return redact_url(config.raw.storage)


def status(config: Config) -> tuple[str, SchemaStatus]:
    """Where the config's store and its schema stand; changes nothing."""
    return where(config), schema_status(config.raw.storage, config.base_dir)


def upgrade(config: Config) -> tuple[str, SchemaStatus, SchemaStatus]:
    """Apply pending migrations to the config's store; the status before and after."""
    before, after = upgrade_schema(config.raw.storage, config.base_dir)
    return where(config), before, after


def describe(store: str, found: SchemaStatus) -> dict[str, Any]:
    """The ``--format json`` document of ``db status``."""
    return {
        "store": store,
        "current": found.current,
        "latest": found.latest,
        "pending": list(found.pending),
        "up_to_date": found.up_to_date,
    }
