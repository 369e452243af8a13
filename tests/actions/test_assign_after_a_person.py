"""A rule's assign leaves a person's assignment made after its event as it is: an agent's from
the console, or one the channel reported (someone taking the chat in the service's own app).
A later assignment by a rule does not stop it, nor one to an agent who can no longer take the
conversation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from action_helpers import make_config, make_event
from test_assign_action import assign, seed, stored

from rulekit.actions.assign import Assign, AssignParams
from rulekit.directory import Directory
from rulekit.event import Event
from rulekit.runtime.replies import note_replies
from rulekit.store.memory import MemoryStore

BY_RULE = AssignParams(group="support", strategy="round_robin")


def received(store: MemoryStore, **fields) -> Event:
    """An event of the conversation as the daemon prepares it (the stored assignment it came
    after on its conversation)."""
    event = make_event(origin="channel", **fields)
    with store.transaction() as state:
        note_replies(state, event)
    return event


def by_agent(store: MemoryStore, agent: str) -> None:
    """An agent assigns the conversation from the console."""
    console = make_event(origin="console", event="updated")
    with store.transaction() as state:
        Assign().change_state(AssignParams(agent=agent), console, state, make_config())


def test_an_agents_assignment_after_the_event_stays_and_the_result_says_why():
    store = MemoryStore()
    seed(store, "k1", "conv-1", group="support")
    event = received(store)
    by_agent(store, "eve@example.com")  # while the rule's job waits its turn
    result, emitted = assign(BY_RULE, store, event)
    assert result["assigned"] is None and result["kept"] is True
    assert "after the event" in result["reason"] and "from the console" in result["reason"]
    assert emitted == []  # no assigned event, no updated one
    conversation = stored(store)[1]
    assert conversation.assignee == "eve@example.com"
    assert conversation.assigned_by == "agent"


def test_an_assignment_the_channel_reported_after_the_event_stays():
    store = MemoryStore()
    seed(store, "k1", "conv-1", group="support")
    event = received(store)
    with store.transaction() as state:
        key, conversation = state.find_conversation("online-chat", "conv-1")
        taken = {"assignee": "eve@example.com", "assigned_by": "channel"}
        taken["assigned_at"] = datetime.now(UTC)
        state.save_conversation("online-chat", key, conversation.model_copy(update=taken))
    result, emitted = assign(BY_RULE, store, event)
    assert "in the channel" in result["reason"] and emitted == []
    assert stored(store)[1].assignee == "eve@example.com"


def test_an_event_after_the_agents_assignment_is_assigned_by_its_rule():
    store = MemoryStore()
    seed(store, "k1", "conv-1", group="support")
    by_agent(store, "eve@example.com")
    event = received(store)  # came after the agent's assignment: the rule may reassign
    assert event.conversation.assigned_by == "agent"
    result, emitted = assign(AssignParams(agent="ann@example.com"), store, event)
    assert result["assigned"] == "Ann@Example.com"
    assert [e.event for e in emitted] == ["assigned", "updated"]
    assert stored(store)[1].assigned_by == "rule"


def test_a_later_rules_assignment_does_not_stop_an_earlier_events_assign():
    store = MemoryStore()
    seed(store, "k1", "conv-1", group="support")
    first = received(store)
    assign(AssignParams(agent="eve@example.com"), store, received(store, id="later"))
    result, _ = assign(AssignParams(agent="ann@example.com"), store, first)
    assert result["assigned"] == "Ann@Example.com"  # the rules' assigns apply in order


def test_an_agent_who_can_no_longer_take_the_conversation_does_not_keep_it():
    store = MemoryStore()
    seed(store, "k1", "conv-1", group="support")
    event = received(store)
    by_agent(store, "eve@example.com")
    config = make_config()  # eve removed from the directory by a reload
    agents = [a for a in config.directory.agents if a.email != "eve@example.com"]
    config.directory = Directory(agents, config.directory.groups)
    result, emitted = assign(BY_RULE, store, event, config)
    assert result["assigned"] == "Ann@Example.com" and emitted


def test_no_clock_decides_whether_the_assignment_came_after_the_event():
    """The service's time of the event may run ahead of the daemon's, or behind: an agent's
    assignment made while the event's assign waited stays either way."""
    for occurred in (datetime(2100, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)):
        store = MemoryStore()
        seed(store, "k1", "conv-1", group="support")
        event = received(store, occurred_at=occurred)
        by_agent(store, "eve@example.com")
        assert assign(AssignParams(agent="ann@example.com"), store, event)[0]["kept"] is True


def test_the_console_assigns_over_anyone():
    store = MemoryStore()
    seed(store, "k1", "conv-1", group="support")
    by_agent(store, "eve@example.com")
    by_agent(store, "ann@example.com")
    assert stored(store)[1].assignee == "Ann@Example.com"


def test_on_postgresql_the_check_and_the_write_wait_for_an_assignment_under_way(tmp_path):
    """The rule's assign reads the conversation it writes under a row lock: an agent's
    assignment not yet committed when the job reads is waited for, then seen (no read of the
    old assignment written over once the agent's commits)."""
    from postgres_schemas import schema_url

    from rulekit.store import open_store
    from rulekit.store.postgres import drop_schema

    url = schema_url()
    store = open_store(url, tmp_path)
    try:
        seed(store, "k1", "conv-1", group="support")
        event = received(store)
        console_pid: list[int] = []
        go, changed = threading.Event(), threading.Event()

        def agent_assigns() -> None:
            console = make_event(origin="console", event="updated")
            with store.transaction() as state:
                console_pid.append(
                    state.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]
                )
                Assign().change_state(
                    AssignParams(agent="eve@example.com"), console, state, make_config()
                )
                changed.set()
                assert go.wait(30)

        def waiting_for_the_agent() -> int:
            with store.reading() as state:
                row = state.execute(
                    "SELECT count(*) AS n FROM pg_stat_activity"
                    " WHERE :pid = ANY(pg_blocking_pids(pid))",
                    {"pid": console_pid[0]},
                ).fetchone()
            return int(row["n"])

        agent = threading.Thread(target=agent_assigns)
        agent.start()
        assert changed.wait(30)
        with ThreadPoolExecutor(1) as pool:
            job = pool.submit(assign, BY_RULE, store, event)
            deadline = time.monotonic() + 30
            while not waiting_for_the_agent():  # the job's read waits on the agent's row lock
                assert time.monotonic() < deadline and not job.done(), "the job did not wait"
                time.sleep(0.01)
            go.set()
            agent.join(30)
            result, emitted = job.result(30)
        assert result["kept"] is True and emitted == []
        assert stored(store)[1].assignee == "eve@example.com"
    finally:
        go.set()
        store.close()
        drop_schema(url)
