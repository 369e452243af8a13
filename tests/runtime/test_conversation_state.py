"""Tags, priority and fields in a real daemon (SQLite and PostgreSQL, the fake Chatra): the
state is stored, each change is one ``updated`` event rules react to, and a rule that sets what
it matches on stops by itself."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

RULES = """\
- name: Tag VIPs
  on: {channel: online-chat, event: created}
  do:
    - tag: {add: [vip]}
    - set: {priority: high, fields: {plan: gold}}
    - set: {priority: high}                      # the same again: no updated event
    - autoreply: {text: "TEXT"}
- name: Escalate
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  if: changed.priority.to == 'high'
  do:
    - set: {priority: urgent}
- name: Sets what it matches on
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  if: "'vip' in conversation.tags"
  do:
    - tag: {add: [vip]}
    - set: {fields: {seen: true}}
""".replace(
    "TEXT",
    "{{ conversation.tags|join(',') }}/{{ conversation.priority }}/{{ conversation.fields.plan }}",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def setup(folder: Path, chatra, storage: str | None) -> Path:
    config = write_setup(folder, RULES, chatra=chatra)
    if storage is not None:
        config.write_text(
            config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
        )
    return config


def test_changes_are_stored_and_each_is_one_updated_event(tmp_path, serve, chatra, storage):
    server = serve(setup(tmp_path, chatra, storage))
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    store = server.daemon.store

    def settled() -> list:
        with store.transaction() as state:
            if state.jobs(status="pending"):
                return []
            done = state.jobs(status="done", limit=1000)
        # tag, set, set, autoreply; escalate once; the loop rule on each of 4 updates (2 each)
        return done if len(done) == 4 + 1 + 4 * 2 else []

    wait_for(settled, timeout=60)
    [reply] = chatra.sent
    assert reply["text"] == "vip/high/gold"  # the template saw the plan's earlier changes
    with store.transaction() as state:
        updates = state.history(event="updated", limit=100)
        _, conversation = state.find_conversation("online-chat", "online-chat:client00000001")
        assert not state.jobs(status="dead")
    assert conversation.tags == ["vip"]
    assert conversation.priority == "urgent"
    assert conversation.fields == {"plan": "gold", "seen": True}
    changed = sorted(
        (sorted(k for k, v in r.data["changed"].items() if v and v != {"added": [], "removed": []}))
        for r in updates
    )
    # tags; priority+fields; fields (seen) once; priority (urgent): nothing twice, no loop
    assert changed == [["fields"], ["fields", "priority"], ["priority"], ["tags"]]
    assert all(r.data["origin"] == "rulekit" for r in updates)
    tags = next(r.data["changed"]["tags"] for r in updates if r.data["changed"]["tags"].get("to"))
    assert tags == {"from": [], "to": ["vip"], "added": ["vip"], "removed": []}
