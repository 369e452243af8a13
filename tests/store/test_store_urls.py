"""The config's ``storage:`` URL: which store it opens, and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulekit.errors import StoreError
from rulekit.store import (
    MemoryStore,
    StorageURL,
    open_store,
    parse_url,
    schema_status,
    upgrade_schema,
)
from rulekit.store.sqlite import SQLiteStore


def test_relative_sqlite_paths_are_next_to_the_config(tmp_path):
    assert parse_url("sqlite:///rulekit.sqlite3", tmp_path) == StorageURL(
        "sqlite", tmp_path / "rulekit.sqlite3"
    )
    assert parse_url("sqlite:///data/my%20rules.sqlite3", tmp_path).path == (
        tmp_path / "data" / "my rules.sqlite3"
    )


def test_absolute_sqlite_paths_take_four_slashes(tmp_path):
    parsed = parse_url("sqlite:////var/lib/rulekit/rulekit.sqlite3", tmp_path)
    assert parsed.path == Path("/var/lib/rulekit/rulekit.sqlite3")


def test_sqlite_options(tmp_path):
    parsed = parse_url("sqlite:///r.sqlite3?synchronous=normal&busy_timeout=2", tmp_path)
    assert parsed.options == {"synchronous": "normal", "busy_timeout": "2"}
    with pytest.raises(StoreError, match=r"unknown option 'journal_mode' \(known: synchronous"):
        parse_url("sqlite:///r.sqlite3?journal_mode=delete", tmp_path)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://rulekit.sqlite3", "has no host; write sqlite:///rulekit.sqlite3"),
        ("sqlite:///", "names no file"),
        ("mysql://db/rulekit", "unknown scheme 'mysql'"),
        ("rulekit.sqlite3", "unknown scheme ''"),
        ("memory://somewhere", "write just 'memory://'"),
        ("postgresql://rulekit@db/rulekit", "PostgreSQL storage is not supported yet"),
    ],
)
def test_bad_urls_are_explained(tmp_path, url, message):
    with pytest.raises(StoreError, match=message):
        parse_url(url, tmp_path)


def test_a_postgresql_password_is_not_repeated(tmp_path):
    with pytest.raises(StoreError) as caught:
        parse_url("postgresql://rulekit:s3cret@db:5432/rulekit", tmp_path)
    assert "s3cret" not in str(caught.value)
    assert "postgresql://rulekit:***@db:5432/rulekit" in str(caught.value)


def test_open_store(tmp_path):
    assert isinstance(open_store("memory://", tmp_path), MemoryStore)
    store = open_store("sqlite:///rulekit.sqlite3?synchronous=NORMAL", tmp_path)
    try:
        assert isinstance(store, SQLiteStore)
        assert (store.path, store.synchronous) == (tmp_path / "rulekit.sqlite3", "NORMAL")
        assert (tmp_path / "rulekit.sqlite3").exists()
    finally:
        store.close()
    with pytest.raises(StoreError, match="busy_timeout must be seconds"):
        open_store("sqlite:///rulekit.sqlite3?busy_timeout=soon", tmp_path)


def test_schema_status_and_upgrade_by_url(tmp_path):
    url = "sqlite:///rulekit.sqlite3"
    assert schema_status(url, tmp_path).current == 0
    before, after = upgrade_schema(url, tmp_path)
    assert (before.current, after.current, after.up_to_date) == (0, after.latest, True)
    assert str(schema_status(url, tmp_path)) == f"schema version {after.latest} (up to date)"
    with pytest.raises(StoreError, match="not supported yet"):
        schema_status("postgresql://db/rulekit", tmp_path)
