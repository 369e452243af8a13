"""``rulekit db status`` and ``rulekit db upgrade``."""

from __future__ import annotations

import json
import sqlite3

import pytest
from audit_site import write
from click.testing import CliRunner

from rulekit.cli.main import cli
from rulekit.store.migrations.sqlite import MIGRATIONS

LATEST = len(MIGRATIONS)


def db(config, *args):
    return CliRunner().invoke(cli, ["db", *args, "--config", str(config)])


def test_status_then_upgrade_a_new_store(tmp_path):
    config = write(tmp_path / "conf" / "rulekit.yaml", "storage: sqlite:///data/rk.sqlite3\n")
    (tmp_path / "conf" / "data").mkdir()
    database = tmp_path / "conf" / "data" / "rk.sqlite3"  # relative to the config's folder

    status = db(config, "status")
    assert status.exit_code == 1  # behind
    assert status.output == (
        f"{database}: schema version 0, latest {LATEST}; pending: "
        + ", ".join(f"{m.version:04d}_{m.name}" for m in MIGRATIONS)
        + "\n"
    )
    assert not database.exists()  # status changes nothing

    upgrade = db(config, "upgrade")
    assert upgrade.exit_code == 0, upgrade.output
    assert upgrade.output == f"{database}: upgraded from version 0 to {LATEST}\n"
    assert database.exists()

    again = db(config, "upgrade")
    assert again.output == f"{database}: schema version {LATEST} (up to date); nothing to do\n"
    status = db(config, "status", "--format", "json")
    assert status.exit_code == 0
    assert json.loads(status.output) == {
        "store": str(database),
        "current": LATEST,
        "latest": LATEST,
        "pending": [],
        "up_to_date": True,
    }


def test_status_of_a_recorded_site_is_up_to_date(site):
    result = site.run("db", "status")
    assert result.exit_code == 0
    assert result.output == f"{site.database}: schema version {LATEST} (up to date)\n"


def test_a_database_newer_than_rulekit_is_refused(site):
    site_conn = sqlite3.connect(site.database)
    with site_conn:
        site_conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, 'future', '')",
            (LATEST + 1,),
        )
    site_conn.close()
    status = site.run("db", "status")
    assert status.exit_code == 1
    assert f"schema version {LATEST + 1} is newer than this rulekit knows" in status.output
    upgrade = site.run("db", "upgrade")
    assert upgrade.exit_code == 2
    assert "newer than this rulekit knows" in upgrade.output
    history = site.run("history")  # reading commands refuse too
    assert history.exit_code == 2


def test_memory_storage_has_no_schema(tmp_path):
    config = write(tmp_path / "rulekit.yaml", "storage: memory://\n")
    result = db(config, "status")
    assert result.exit_code == 0
    assert result.output == "memory://: schema version 0 (up to date)\n"
    history = CliRunner().invoke(cli, ["history", "--config", str(config)])
    assert history.exit_code == 2
    assert "nothing is kept between processes" in history.output


def test_status_names_a_postgresql_store_without_its_passwords(tmp_path):
    pytest.importorskip("psycopg")
    url = (
        "postgresql://rulekit:s3cret@127.0.0.1:9/rk"
        "?sslpassword=k3y&connect_timeout=1&pool_timeout=1"
    )
    config = write(tmp_path / "rulekit.yaml", f"storage: {url}\n")
    status = db(config, "status")
    assert status.exit_code != 0
    assert "Traceback" not in status.output
    assert "s3cret" not in status.output and "k3y" not in status.output
    assert "postgresql://rulekit:***@127.0.0.1:9/rk?sslpassword=***" in status.output
