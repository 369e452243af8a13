"""``update_client`` changes rulekit's record of the client once the channel's service has
taken the change: when the service refuses it for good (here Chatra answers 404, the client
unknown to it), the job is dead-lettered and the record keeps what the service still holds.
Before, the record was changed first and kept the change the service refused, so rules and
the console read data the client does not have anywhere else (SQLite, the fake Chatra)."""

from __future__ import annotations

import httpx
from daemons import chat_started, wait_for, write_setup

RULES = """\
- name: Rename
  on: {channel: online-chat, event: created}
  do:
    - update_client: {name: "Renamed by a rule", notes: "noted"}
"""


def test_a_change_the_service_refuses_is_not_kept(tmp_path, serve, chatra) -> None:
    server = serve(write_setup(tmp_path, RULES, chatra=chatra))
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    store = server.daemon.store

    def dead() -> list:
        with store.transaction() as state:
            return state.jobs(status="dead")

    [job] = wait_for(dead, timeout=30)
    assert "404" in (job.last_error or "") or "not found" in (job.last_error or "").lower()
    with store.transaction() as state:
        client = state.get_client("online-chat", "client00000001")
    assert client is not None
    assert client.name != "Renamed by a rule" and client.notes != "noted"
    # once the service knows the client, the same change goes through, and is kept
    chatra.add_client("client00000001")
    with store.transaction() as state:
        state.requeue_job(job.id)
    wait_for(lambda: chatra.client_updates, timeout=30)

    def kept() -> bool:
        with store.transaction() as state:
            found = state.get_client("online-chat", "client00000001")
        return found is not None and found.name == "Renamed by a rule"

    wait_for(kept, timeout=30)
