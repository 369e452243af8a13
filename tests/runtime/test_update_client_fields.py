"""``update_client`` changes only the fields a rule writes: a rule that puts a note on a client
cleared their name, email and phone at Chatra and in rulekit's record (the planned parameters
hold every field, those not written as null, which read as "cleared")."""

from __future__ import annotations

import json

import httpx
from daemons import SAMPLE, wait_for, write_setup

RULES = """\
- name: Note
  on: {channel: online-chat, event: created}
  do:
    - update_client: {notes: "came through the chat"}
"""


def test_a_rule_writing_one_field_leaves_the_others(tmp_path, serve, chatra):
    client = "noteclient0000000000000000000000000000"
    chatra.add_client(client)
    server = serve(write_setup(tmp_path, RULES, chatra=chatra))
    body = json.loads(json.dumps(SAMPLE))
    body["client"].update(
        {"id": client, "info": {"name": "Ann Lee", "email": "ann@x.io", "phone": "+1 555 0100"}}
    )
    assert httpx.post(server.webhook_url, content=json.dumps(body).encode()).status_code == 200
    wait_for(lambda: chatra.client_updates)
    assert chatra.client_updates == [(client, {"notes": "came through the chat"})]

    def recorded():
        with server.daemon.store.transaction() as state:
            if state.jobs(status="pending"):
                return None
            return state.get_client("online-chat", client)

    kept = wait_for(recorded)
    assert (kept.name, kept.email, kept.phone) == ("Ann Lee", "ann@x.io", "+1 555 0100")
    assert kept.notes == "came through the chat"
