"""Calls longer than the job's lease keep their claims: the dispatcher renews the claims of all
the calls under way together, every third of the lease, so no other claimer takes a job whose
call is still being made (it would make the call again although nobody crashed)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

from rulekit.testing.fakehttp import FakeService, Response

HOOK_SECRET = "whsec-0123456789abcdef"
TWO_TARGETS = """\
- name: Tell the CRM and the ERP
  on: {channel: online-chat, event: created}
  do:
    - webhook: {to: crm}
    - webhook: {to: erp}
"""


def claimed_until(folder) -> dict[int, str]:
    """Each pending job's ``claimed_until``, as the daemon's store holds it."""
    with sqlite3.connect(folder / "rulekit.sqlite3") as conn:
        rows = conn.execute(
            "SELECT id, claimed_until FROM outbox WHERE status = 'pending'"
        ).fetchall()
    return dict(rows)


@pytest.mark.slow
def test_calls_longer_than_the_lease_keep_their_claims(tmp_path, serve):
    lease = 4.5  # (not a multiple of the idle poll: the daemon reclaims its own expired jobs)
    with FakeService() as crm, FakeService() as erp:
        crm.script(Response(200, {}, delay=120))  # held until released
        erp.script(Response(200, {}, delay=120))
        targets = "".join(
            f"    {name}: {{url: '{target.base_url}/hook', secret: {HOOK_SECRET}, timeout: 60}}\n"
            for name, target in (("crm", crm), ("erp", erp))
        )
        extra = "integrations:\n  webhooks:\n" + targets
        config = write_setup(tmp_path, TWO_TARGETS, extra=extra)
        server = serve(config, job_lease=lease)
        assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
        wait_for(lambda: crm.requests and erp.requests)  # both calls under way
        store = server.daemon.store
        seen: dict[int, set[str]] = {}
        end = time.monotonic() + 2.5 * lease  # (how long the calls are held, not a bound)
        while time.monotonic() < end or min(map(len, seen.values()), default=0) < 3:
            with store.transaction() as state:  # another daemon, polling for work
                assert state.claim_jobs("another-daemon", lease=lease, limit=10) == []
            for job_id, until in claimed_until(tmp_path).items():
                seen.setdefault(job_id, set()).add(until)
            assert time.monotonic() < end + 60, seen
            time.sleep(0.1)
        assert len(seen) == 2  # both calls' claims were renewed, again and again
        crm.release()
        erp.release()
        wait_for(lambda: not claimed_until(tmp_path))
        assert len(crm.requests) == len(erp.requests) == 1
        with sqlite3.connect(tmp_path / "rulekit.sqlite3") as conn:
            assert conn.execute("SELECT status, attempts FROM outbox").fetchall() == [
                ("done", 1),
                ("done", 1),
            ]
