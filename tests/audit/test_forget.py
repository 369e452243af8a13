"""``rulekit forget``: a client's personal data really leaves the SQLite file; counts reported."""

from __future__ import annotations

import json
import subprocess
import sys

from audit_site import JANE_EMAIL, REFUND_TEXT


def test_forget_erases_the_client_from_the_file_and_reports_counts(site):
    before = site.sql("SELECT count(*) FROM events WHERE data LIKE ?", (f"%{JANE_EMAIL}%",))
    assert before == [(2,)]  # the test can fail: the data is there first
    result = site.run("forget", "c-jane", "--yes")
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0] == "client 'c-jane' on every channel:"
    counts = {line.split(None, 1)[1]: int(line.split()[0]) for line in out[1:]}
    assert counts == {
        "client records deleted": 1,
        "conversations cleared of personal fields": 1,
        "audit records cleared of client data": 2,
        "message texts erased": 2,
        "raw payloads (inbox bodies) erased": 2,
        "action jobs scrubbed": 1,
        "action attempts scrubbed": 1,
    }
    # read the file itself: no trace of Jane's email, name or message anywhere
    for table in ("events", "outbox", "attempts", "clients", "conversations", "inbox"):
        dump = repr(site.sql(f"SELECT * FROM {table}"))
        for value in (JANE_EMAIL, "Jane Doe", REFUND_TEXT, "/orders/77"):
            if table == "conversations" and value == "/orders/77":
                # Bob's conversation had the same page: only Jane's is cleared
                rows = site.sql("SELECT data FROM conversations WHERE key = 'c-jane'")
                assert value not in repr(rows)
                continue
            assert value not in dump, (table, value)
    assert site.sql("SELECT count(*) FROM clients WHERE id = 'c-jane'") == [(0,)]
    assert site.sql("SELECT body FROM inbox WHERE CAST(body AS TEXT) LIKE '%c-jane%'") == []
    # Bob's records are untouched, the audit trail keeps ids and statuses
    assert site.sql("SELECT count(*) FROM events WHERE data LIKE '%Bob Roe%'") == [(1,)]
    assert site.sql("SELECT count(*) FROM inbox WHERE CAST(body AS TEXT) LIKE '%c-bob%'") == [(1,)]
    statuses = site.sql(
        "SELECT status FROM outbox WHERE event_id LIKE 'chatra:%:jane-%' ORDER BY id"
    )
    assert statuses == [("done",), ("done",)]
    why = site.run("why", "chatra:message:jane-2", "--show-content").output
    assert "✓ Refunds to Slack" in why and REFUND_TEXT not in why


def test_forget_twice_finds_nothing_the_second_time(site):
    site.run("forget", "c-jane", "--yes")
    result = site.run("forget", "c-jane", "--yes", "--format", "json")
    doc = json.loads(result.output)
    assert doc["erased"]["clients"] == 0 and doc["erased"]["payloads"] == 0
    text = site.run("forget", "nobody", "--yes").output
    assert text == "nothing recorded about client 'nobody' on every channel\n"


def test_forget_asks_first(site):
    result = site.run("forget", "c-jane", input="n\n")
    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert site.sql("SELECT count(*) FROM clients WHERE id = 'c-jane'") == [(1,)]


def test_forget_on_another_channel_leaves_the_client(site):
    result = site.run("forget", "c-jane", "--channel", "telegram", "--yes")
    assert result.output == "nothing recorded about client 'c-jane' on channel 'telegram'\n"
    assert site.sql("SELECT count(*) FROM clients WHERE id = 'c-jane'") == [(1,)]


HOLD_A_SNAPSHOT = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM events").fetchall()
print("reading", flush=True)
sys.stdin.read()
"""


def test_forget_truncates_the_wal_or_says_it_could_not(site):
    config = site.config.read_text()
    site.config.write_text(config.replace("audit.sqlite3", "audit.sqlite3?busy_timeout=0.2"))
    wal = site.database.with_name("audit.sqlite3-wal")
    # a daemon in the middle of a transaction, in another process
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_SNAPSHOT, str(site.database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert reader.stdout is not None and reader.stdout.readline() == "reading\n"
        held = site.run("forget", "c-jane", "--yes")
        assert held.exit_code == 0, held.output
        assert "write-ahead log is in use" in held.stderr
        assert wal.stat().st_size > 0
    finally:
        reader.communicate("", timeout=10)
    again = site.run("forget", "c-jane", "--yes")
    assert again.exit_code == 0 and again.stderr == ""
    assert not wal.exists() or wal.stat().st_size == 0
