"""``rulekit forget`` against what a real daemon stored: afterwards no form of the client's
personal values (raw, markup-escaped, URL- or JSON-encoded, any case) is anywhere in the
database — the SQLite file with its WAL and shared-memory files, byte for byte, or every column
of every PostgreSQL table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from privacy_scenario import BOB_NAME, BOB_TEXT, CLIENT, NAME, PERSONAL, leftovers, record

from rulekit.cli.main import cli


def sqlite_bytes(folder: Path) -> str:
    """The database file, its WAL and its shared-memory file, as text (bytes kept as they are
    where they are not UTF-8)."""
    blob = b"".join(
        path.read_bytes() for path in sorted(folder.glob("rulekit.sqlite3*")) if path.is_file()
    )
    return blob.decode("utf-8", errors="surrogateescape")


def forget(config: Path) -> dict[str, int]:
    result = CliRunner().invoke(
        cli, ["forget", CLIENT, "--yes", "--format", "json", "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # the write-ahead log was truncated
    return json.loads(result.stdout)["erased"]


@pytest.mark.slow
def test_forget_leaves_no_form_of_personal_data_in_the_sqlite_files(tmp_path, serve):
    site, stop = record(tmp_path, serve)
    try:
        before = sqlite_bytes(tmp_path)
        # the test can fail: every value is in the files, escaped forms too
        assert {what for what, _ in leftovers(before)} == set(PERSONAL)
        assert {form for _, form in leftovers(before)} >= {
            "raw",
            "telegram html",
            "markdown v2",
            "slack mrkdwn",
            "url",
            "upper raw",
        }
        erased = forget(site.config)
        assert erased["clients"] == 1 and erased["events"] == 2 and erased["payloads"] == 2
        after = sqlite_bytes(tmp_path)  # the daemon still runs, its connection open
        assert leftovers(after) == []
        assert BOB_NAME in after and BOB_TEXT in after  # the other client stays
        assert CLIENT in after  # the pseudonymous id keeps the audit trail together
    finally:
        stop()
    assert leftovers(sqlite_bytes(tmp_path)) == []


def postgres_dump(url: str) -> str:
    """Every column of every table of the URL's schema, as text (bytea decoded as UTF-8)."""
    import psycopg

    server, _, query = url.partition("?")
    schema = dict(part.split("=", 1) for part in query.split("&"))["schema"]
    out: list[str] = []
    with psycopg.connect(server) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = %s ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
        assert {table for table, _, _ in columns} >= {"events", "outbox", "attempts", "inbox"}
        for table, column, data_type in columns:
            cast = "" if data_type == "bytea" else "::text"
            rows = conn.execute(f'SELECT "{column}"{cast} FROM "{schema}"."{table}"').fetchall()
            for (value,) in rows:
                if isinstance(value, bytes):
                    value = value.decode("utf-8", errors="replace")
                out.append(f"{table}.{column}: {value}")
    return "\n".join(out)


@pytest.mark.slow
def test_forget_leaves_no_form_of_personal_data_in_any_postgres_table(
    tmp_path, serve, postgres_url
):
    site, stop = record(tmp_path, serve, storage=postgres_url)
    try:
        before = postgres_dump(postgres_url)
        assert {what for what, _ in leftovers(before)} == set(PERSONAL)
        erased = forget(site.config)
        assert erased["clients"] == 1 and erased["events"] == 2
        after = postgres_dump(postgres_url)
        assert leftovers(after) == []
        assert BOB_NAME in after and BOB_TEXT in after
        assert NAME not in after
    finally:
        stop()
