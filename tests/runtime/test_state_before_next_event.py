"""An event is evaluated against the conversation as the plans of the events before it left it:
a ``tag`` or ``set`` changes the stored conversation as its event is recorded, not when its
turn in the conversation's lane comes. Before, a chat's ``tag`` waited behind the greeting the
fake Chatra kept refusing (a 429, then a 500), and the client's next message, evaluated
meanwhile, did not see the tag: the daemon did not do what ``rulekit test`` said it would
(SQLite and PostgreSQL, the fake Chatra)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from daemons import chat_fragment, chat_started, wait_for, write_setup

from rulekit.audit.dryrun import run_input
from rulekit.engine.engine import Engine
from rulekit.runtime.pipeline import Pipeline
from rulekit.store.memory import MemoryStore

RULES = """\
- name: Greet and tag
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello"}
    - tag: {add: [vip]}
    - set: {fields: {tier: gold}}
- name: VIP messages
  on: {channel: online-chat, event: message}
  if:
    - "'vip' in conversation.tags"
    - conversation.fields.tier == 'gold'
  do:
    - autoreply: {text: "A VIP agent is on it"}
- name: Others
  on: {channel: online-chat, event: message}
  if: "'vip' not in conversation.tags"
  do:
    - autoreply: {text: "We will answer soon"}
"""


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


def dry_run(folder: Path, config: Path, bodies: list[bytes]) -> list[tuple[str, str, str]]:
    """What ``rulekit test`` plans for ``bodies`` in order: (event, rule, action) of each."""
    pipeline = Pipeline(Engine.from_path(folder / "rules.d", config), MemoryStore())
    planned = []
    for n, body in enumerate(bodies):
        path = folder / f"input{n}.json"
        path.write_bytes(body)
        result = run_input(pipeline, path, "online-chat", None)
        assert result.error is None
        planned += [
            (event.event, action.rule, action.action)
            for event, plan in result.events
            for action in plan
        ]
    return planned


def test_the_next_event_sees_the_changes_of_a_plan_held_up_by_a_retry(
    tmp_path, serve, chatra, storage
):
    config = setup(tmp_path, chatra, storage)
    server = serve(config)
    store = server.daemon.store
    chatra.rate_limit(retry_after=1)  # the greeting: a 429, then a 500, then taken
    chatra.fail(500)
    bodies = [chat_started(1), chat_fragment(1, 1, "where is my order?")]
    assert httpx.post(server.webhook_url, content=bodies[0]).status_code == 200
    wait_for(lambda: chatra.requests, timeout=30)  # the greeting was refused: its lane waits
    assert httpx.post(server.webhook_url, content=bodies[1]).status_code == 200

    def settled() -> list:
        with store.transaction() as state:
            jobs = state.jobs(status="done", limit=100)
            if state.jobs(status="pending") or len(jobs) < 4:
                return []
            kinds = {r.event_id: r.event for r in state.history(limit=100)}
        return [(kinds[j.event_id], j.rule, j.action) for j in sorted(jobs, key=lambda j: j.id)]

    done = wait_for(settled, timeout=60)
    assert [m["text"] for m in chatra.sent][-1] == "A VIP agent is on it"
    assert sorted(done) == sorted(dry_run(tmp_path, config, bodies))
    with store.transaction() as state:
        _, conversation = state.find_conversation("online-chat", "online-chat:client00000001")
        assert not state.jobs(status="dead")
    assert conversation.tags == ["vip"]
    assert conversation.fields == {"tier": "gold"}


TOGGLE = """\
- name: Toggle
  on: {channel: online-chat, event: created}
  do:
    - tag: {add: [vip]}
    - tag: {remove: [vip]}
    - tag: {add: [vip]}
- name: Say what changed
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  do:
    - autoreply: {text: "+{{ changed.tags.added|join(',') }} -{{ changed.tags.removed|join(',') }}"}
"""


def test_the_same_change_made_twice_under_one_event_is_two_events(tmp_path, serve, chatra, storage):
    """A tag added, removed and added again by one plan: three ``updated`` events, the first
    and the last alike. Before, they had one id: the last was taken for a redelivery of the
    first and dropped, and its rules never ran."""
    config = write_setup(tmp_path, TOGGLE, chatra=chatra)
    if storage is not None:
        config.write_text(
            config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
        )
    server = serve(config)
    store = server.daemon.store
    bodies = [chat_started(1)]
    assert httpx.post(server.webhook_url, content=bodies[0]).status_code == 200

    def settled() -> list:
        with store.transaction() as state:
            jobs = state.jobs(status="done", limit=100)
            if state.jobs(status="pending") or len(jobs) < 6:
                return []
            kinds = {r.event_id: r.event for r in state.history(limit=100)}
        return [(kinds[j.event_id], j.rule, j.action) for j in jobs]

    done = wait_for(settled, timeout=60)
    assert sorted(m["text"] for m in chatra.sent) == ["+ -vip", "+vip -", "+vip -"]
    assert sorted(done) == sorted(dry_run(tmp_path, config, bodies))
    with store.transaction() as state:
        updates = state.history(event="updated", limit=100)
        _, conversation = state.find_conversation("online-chat", "online-chat:client00000001")
    assert len({r.event_id for r in updates}) == 3
    assert conversation.tags == ["vip"]
