"""assign: explicit agents and strategies over a directory with mixed access and mixed case."""

from __future__ import annotations

import asyncio

from action_helpers import make_config, make_context, make_event

from rulekit.actions.assign import Assign, AssignParams
from rulekit.event import Conversation
from rulekit.store.memory import MemoryStore


def assign(params: AssignParams, store: MemoryStore, event=None, config=None):
    context = make_context(event or make_event(), config or make_config(), store=store)
    result = asyncio.run(Assign().execute(params, context))
    return result, context.emitted


def stored(store: MemoryStore, conversation_id: str = "conv-1", channel: str = "online-chat"):
    with store.transaction() as state:
        found = state.find_conversation(channel, conversation_id)
    return found


def seed(store: MemoryStore, key: str, conversation_id: str, **fields) -> None:
    with store.transaction() as state:
        conversation = Conversation(id=conversation_id, status="open", **fields)
        state.save_conversation("online-chat", key, conversation)


def test_an_explicit_agent_is_found_whatever_the_case():
    store = MemoryStore()
    seed(store, "chatra-client-1", "conv-1", group="support")
    result, emitted = assign(AssignParams(agent="ANN@example.COM"), store)
    assert result == {
        "assigned": "Ann@Example.com",
        "group": "support",
        "changed": True,
        "event_id": emitted[0].id,
        "updated_event_id": emitted[1].id,
    }
    key, conversation = stored(store)
    assert key == "chatra-client-1"  # saved back under the provider's key
    assert conversation.assignee == "Ann@Example.com"
    event, updated = emitted  # ``assigned`` as before, then ``updated`` saying what changed
    assert (event.event, event.origin, event.channel) == ("assigned", "rulekit", "online-chat")
    assert event.conversation.assignee == "Ann@Example.com"
    assert event.client.id == "client-1"
    assert (updated.event, updated.origin) == ("updated", "rulekit")
    assert updated.changed["assignee"] == {"from": None, "to": "Ann@Example.com"}
    assert updated.changed["group"] == {}  # unchanged
    # the same agent again: no change, no event
    result, emitted = assign(AssignParams(agent="ann@example.com"), store)
    assert result["changed"] is False and emitted == []


def test_an_agent_without_access_to_the_channel_is_not_assigned():
    store = MemoryStore()
    result, emitted = assign(AssignParams(agent="bob@example.com"), store)
    assert result["assigned"] is None
    assert result["reason"] == "agent bob@example.com has no access to channel 'online-chat'"
    assert emitted == [] and stored(store) is None


def test_round_robin_cycles_through_eligible_agents_only():
    store = MemoryStore()
    picks = []
    for n in range(6):
        event = make_event(conversation={"id": f"conv-{n}"})
        result, _ = assign(AssignParams(group="support"), store, event)
        picks.append(result["assigned"])
    # bob is in support but has no access to online-chat
    assert picks == ["Ann@Example.com", "Cara@example.COM", "eve@example.com"] * 2


def test_round_robin_positions_live_in_the_store():
    store = MemoryStore()
    assign(AssignParams(group="support"), store, make_event(conversation={"id": "a"}))
    # a new action instance (a restarted daemon) continues where the store says
    result, _ = assign(AssignParams(group="support"), store, make_event(conversation={"id": "b"}))
    assert result["assigned"] == "Cara@example.COM"


def test_least_open_picks_the_least_busy_agent_with_ties_in_directory_order():
    store = MemoryStore()
    seed(store, "k1", "c1", assignee="ann@example.com")
    seed(store, "k2", "c2", assignee="ANN@EXAMPLE.COM")
    seed(store, "k3", "c3", assignee="cara@example.com")
    seed(store, "k4", "c4", assignee="eve@example.com")
    with store.transaction() as state:  # closed conversations do not count
        state.save_conversation(
            "online-chat", "k5", Conversation(id="c5", status="closed", assignee="Cara@example.com")
        )
    result, _ = assign(AssignParams(group="support", strategy="least_open"), store)
    assert result["assigned"] == "Cara@example.COM"  # Cara 1, eve 1: Cara comes first


def test_least_open_does_not_count_the_conversation_being_reassigned():
    store = MemoryStore()
    seed(store, "k1", "conv-1", assignee="ann@example.com", group="support")
    seed(store, "k2", "c2", assignee="cara@example.com")
    seed(store, "k3", "c3", assignee="eve@example.com")
    result, emitted = assign(AssignParams(strategy="least_open"), store)
    assert result["assigned"] == "Ann@Example.com" and result["changed"] is False
    assert emitted == []


def test_the_group_defaults_to_the_conversations_then_the_channels():
    store = MemoryStore()
    config = make_config(default_group="sales")
    result, _ = assign(AssignParams(), store, config=config)
    assert (result["assigned"], result["group"]) == ("Cara@example.COM", "sales")
    event = make_event(conversation={"id": "conv-2", "group": "support"})
    result, _ = assign(AssignParams(strategy="least_open"), store, event, config)
    assert (result["assigned"], result["group"]) == ("Ann@Example.com", "support")


def test_nobody_eligible_is_a_result_not_an_error():
    store = MemoryStore()
    event = make_event(channel="phone")
    result, emitted = assign(AssignParams(group="support"), store, event)
    assert result == {
        "assigned": None,
        "group": "support",
        "reason": "no agent in group 'support' has access to channel 'phone'",
    }
    assert emitted == []


def test_a_conversation_the_provider_does_not_store_is_kept_under_its_id():
    store = MemoryStore()
    event = make_event(channel="web", conversation={"id": "web-7"})
    result, _ = assign(AssignParams(), store, event)
    assert result["assigned"] == "Cara@example.COM"  # the only agent with access to "web"
    assert stored(store, "web-7", "web") is not None
    with store.transaction() as state:
        assert state.open_conversations_by_assignee("web") == {"cara@example.com": 1}


def test_check_reports_unknown_agents_missing_access_and_unknown_groups():
    config = make_config()
    assert Assign.check(AssignParams(agent="nobody@example.com"), ["online-chat"], config) == [
        "agent 'nobody@example.com' is not in the agent directory"
    ]
    assert Assign.check(AssignParams(agent="BOB@example.com"), ["online-chat"], config) == [
        "agent bob@example.com has no access to channel 'online-chat'"
    ]
    assert Assign.check(AssignParams(group="nope"), ["online-chat"], config) == [
        "unknown group 'nope'"
    ]
