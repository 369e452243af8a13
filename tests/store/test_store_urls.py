"""The config's ``storage:`` URL: which store it opens, and where."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulekit.errors import StoreError, StoreUnavailable
from rulekit.store import (
    MemoryStore,
    StorageURL,
    open_store,
    parse_url,
    schema_status,
    upgrade_schema,
)
from rulekit.store.postgres import split_url
from rulekit.store.sqlite import SQLiteStore
from rulekit.store.urls import redact_url


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
        ("postgresql://rulekit@db/rulekit?schema=Rules", "schema 'Rules' must be a lower-case"),
        ("postgresql://rulekit@db/rulekit?pool_size=0", "pool_size must be a positive number"),
    ],
)
def test_bad_urls_are_explained(tmp_path, url, message):
    with pytest.raises(StoreError, match=message):
        parse_url(url, tmp_path)


def test_postgresql_urls_keep_libpq_parameters_and_take_rulekit_options(tmp_path):
    url = "postgresql://rulekit@db:5432/rulekit?sslmode=require&schema=team_a&pool_size=4"
    parsed = parse_url(url, tmp_path)
    assert parsed == StorageURL(
        "postgresql", options={"schema": "team_a", "pool_size": "4"}, url=url
    )
    assert parse_url("postgres://db/rulekit", tmp_path).scheme == "postgresql"
    assert split_url(url) == (
        "postgresql://rulekit@db:5432/rulekit?sslmode=require",
        {"schema": "team_a", "pool_size": "4"},
    )


def test_a_postgresql_password_is_not_repeated(tmp_path):
    with pytest.raises(StoreError) as caught:
        parse_url("postgresql://rulekit:s3cret@db:5432/rulekit?schema=9", tmp_path)
    assert "s3cret" not in str(caught.value)
    assert "postgresql://rulekit:***@db:5432/rulekit?schema=9" in str(caught.value)


def test_an_unreachable_postgresql_server_is_unavailable(tmp_path):
    pytest.importorskip("psycopg")
    url = "postgresql://rulekit@127.0.0.1:9/rulekit?connect_timeout=1&pool_timeout=1"
    with pytest.raises(StoreUnavailable, match="PostgreSQL store postgresql://rulekit@"):
        open_store(url, tmp_path)
    with pytest.raises(StoreUnavailable):
        schema_status(url, tmp_path)


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


def test_postgresql_schema_status_and_upgrade_by_url(tmp_path, postgres_schema):
    from rulekit.store.postgres import PostgresStore

    url = postgres_schema
    assert schema_status(url, tmp_path).current == 0
    with pytest.raises(StoreError, match=r"pending: 0001_initial, 0002_.*; run `rulekit db upgr"):
        open_store(url, tmp_path, upgrade=False)
    before, after = upgrade_schema(url, tmp_path)
    assert (before.current, after.current, after.up_to_date) == (0, after.latest, True)
    store = open_store(url, tmp_path, upgrade=False)
    assert isinstance(store, PostgresStore)
    assert store.schema_status().up_to_date
    store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://rulekit:s3cret@db:5432/rk?schema=a",
            "postgresql://rulekit:***@db:5432/rk?schema=a",
        ),
        ("postgresql://rulekit:p%40ss:w@db/rk", "postgresql://rulekit:***@db/rk"),
        ("postgresql://rulekit:@db/rk", "postgresql://rulekit:***@db/rk"),
        (
            "postgresql://db/rk?sslmode=require&password=s3cret",
            "postgresql://db/rk?sslmode=require&password=***",
        ),
        (
            "postgres://db/rk?Password=s3cret&sslpassword=k3y#x",
            "postgres://db/rk?Password=***&sslpassword=***#x",
        ),
        ("sqlite:///rk.sqlite3?password=s3cret", "sqlite:///rk.sqlite3?password=***"),
        ("postgresql://rulekit:s3cret@[db/rk", "postgresql://***"),
        ("sqlite:///rk.sqlite3?synchronous=normal", "sqlite:///rk.sqlite3?synchronous=normal"),
        (
            "postgresql://rulekit@db/rk?passfile=/etc/pgpass",
            "postgresql://rulekit@db/rk?passfile=/etc/pgpass",
        ),
        ("memory://", "memory://"),
    ],
)
def test_redact_url_hides_the_password_wherever_the_url_holds_it(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://rulekit:s3cret@db/rk.sqlite3",  # "has no host", with a suggested URL
        "sqlite:///rk.sqlite3?password=s3cret",  # unknown option
        "memory://rulekit:s3cret@db",
        "mysql://rulekit:s3cret@db/rk",
        "postgresql://db/rk?password=s3cret&schema=Rules",
        "postgresql://db/rk?password=s3cret&pool_size=0",
        "postgresql://rulekit:s3cret@[db/rk",  # urllib cannot split it
    ],
)
def test_no_storage_url_error_repeats_a_password(tmp_path, url):
    with pytest.raises(StoreError) as caught:
        parse_url(url, tmp_path)
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_an_unreachable_server_is_named_without_the_query_password(tmp_path):
    pytest.importorskip("psycopg")
    url = "postgresql://rulekit@127.0.0.1:9/rk?password=s3cret&connect_timeout=1&pool_timeout=1"
    with pytest.raises(StoreUnavailable) as caught:
        open_store(url, tmp_path)
    assert "s3cret" not in str(caught.value)
    assert "password=***" in str(caught.value)
