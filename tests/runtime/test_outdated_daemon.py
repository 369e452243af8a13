"""A daemon whose store a newer rulekit migrated while it ran (a rolling upgrade: another daemon
on the store started on the new version first). It went on claiming and writing rows of the
schema it knew into the newer one; now it takes no more work, says why, and answers webhooks
503 for their senders to retry (another daemon takes them), once the calls under way have
ended and their outcomes are recorded."""

from __future__ import annotations

import sqlite3

import httpx
from daemons import chat_started, wait_for, write_setup

from rulekit.store.migrations.sqlite import MIGRATIONS

NEWER = len(MIGRATIONS) + 1


def migrate_to_a_newer_version(database) -> None:
    with sqlite3.connect(database) as conn:  # as a newer rulekit's migration leaves it
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (NEWER, "from_the_future", "2030-01-01T00:00:00.000000+00:00"),
        )


def test_a_daemon_whose_store_a_newer_rulekit_migrated_takes_no_more_work(
    tmp_path, serve, chatra
) -> None:
    daemon = serve(write_setup(tmp_path, chatra=chatra), schema_interval=0.05)
    assert httpx.post(daemon.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1)  # working as usual

    migrate_to_a_newer_version(tmp_path / "rulekit.sqlite3")
    health = wait_for(
        lambda: (answer := httpx.get(f"{daemon.url}/healthz")).status_code == 503 and answer
    )
    said = health.json()["outdated"]
    assert f"version {NEWER}" in said and "newer rulekit" in said, said
    answer = httpx.post(daemon.webhook_url, content=chat_started(2))
    assert answer.status_code == 503
    # nothing of the newer schema's store was taken: no second reply, the inbox untouched
    with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
        (items,) = conn.execute("SELECT count(*) FROM inbox").fetchone()
    assert items == 1 and len(chatra.sent) == 1
