"""tag and set: conversation state changed in the store, one ``updated`` event per change."""

from __future__ import annotations

import asyncio

import pytest
from action_helpers import make_config, make_context, make_event
from pydantic import ValidationError

from rulekit.actions.set_state import SetParams, SetState
from rulekit.actions.tag import Tag, TagParams
from rulekit.config import RawConfig
from rulekit.errors import PermanentActionError
from rulekit.event import Conversation
from rulekit.store.memory import MemoryStore


def call(action, params, store, config=None, event=None):
    context = make_context(event or make_event(), config or make_config(), store=store)
    result = asyncio.run(action.execute(params, context))
    return result, context.emitted


def stored(store: MemoryStore) -> Conversation:
    with store.transaction() as state:
        found = state.find_conversation("online-chat", "conv-1")
    assert found is not None
    return found[1]


def seed(store: MemoryStore, **fields) -> None:
    with store.transaction() as state:
        state.save_conversation(
            "online-chat", "client-key", Conversation(id="conv-1", status="open", **fields)
        )


def test_tags_are_added_and_removed_with_one_updated_event():
    store = MemoryStore()
    seed(store, tags=["new", "de"])
    result, [updated] = call(Tag(), TagParams(add=["vip", "de"], remove=["new"]), store)
    assert stored(store).tags == ["de", "vip"]
    assert result == {"tags": ["de", "vip"], "changed": True, "event_id": updated.id}
    assert (updated.event, updated.origin) == ("updated", "rulekit")
    assert updated.changed["tags"] == {
        "from": ["new", "de"],
        "to": ["de", "vip"],
        "added": ["vip"],
        "removed": ["new"],
    }
    assert updated.changed["priority"] == {} and updated.changed["fields"] == {}
    assert updated.conversation.tags == ["de", "vip"]
    # the same again changes nothing: no event
    result, emitted = call(Tag(), TagParams(add=["vip"], remove=["new"]), store)
    assert result["changed"] is False and emitted == []


def test_priority_and_fields_are_set_and_null_removes_a_field():
    store = MemoryStore()
    seed(store, fields={"plan": "free", "old": 1})
    params = SetParams(priority="high", fields={"plan": "gold", "old": None, "seats": 5})
    result, [updated] = call(SetState(), params, store)
    conversation = stored(store)
    assert (conversation.priority, conversation.fields) == ("high", {"plan": "gold", "seats": 5})
    assert updated.changed["priority"] == {"from": None, "to": "high"}
    assert updated.changed["fields"] == {
        "old": {"from": 1, "to": None},
        "plan": {"from": "free", "to": "gold"},
        "seats": {"from": None, "to": 5},
    }
    assert updated.changed["tags"] == {"added": [], "removed": []}
    assert result["changed"] is True
    _, emitted = call(SetState(), SetParams(priority="high", fields={"plan": "gold"}), store)
    assert emitted == []


def test_a_conversation_the_provider_does_not_store_is_kept_under_its_id():
    store = MemoryStore()
    _, [updated] = call(Tag(), TagParams(add=["vip"]), store)
    assert stored(store).tags == ["vip"] and updated.conversation.id == "conv-1"


def test_names_are_checked_against_the_configured_lists_with_a_suggestion():
    config = make_config()
    config.raw = RawConfig(tags=["vip", "billing"], fields=["plan"])
    assert Tag.check(TagParams(add=["vipp"]), ["online-chat"], config) == [
        "unknown tag 'vipp' (did you mean 'vip'?) (config: tags)"
    ]
    assert Tag.check(TagParams(add=["{{ client.custom.tier }}"]), [], config) == []
    assert SetState.check(SetParams(fields={"plann": "x"}), [], config) == [
        "unknown field 'plann' (did you mean 'plan'?) (config: fields)"
    ]
    # a templated name that renders to an unknown one fails the call, and the dry run says so
    store = MemoryStore()
    context = make_context(make_event(), config, store=store)
    assert Tag().would_fail(TagParams(add=["gold"]), context) == (
        "unknown tag 'gold' (config: tags)"
    )
    with pytest.raises(PermanentActionError, match="unknown tag 'gold'"):
        asyncio.run(Tag().execute(TagParams(add=["gold"]), context))
    # free-form without the lists
    assert Tag.check(TagParams(add=["anything"]), [], make_config()) == []


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (TagParams, {}, "name tags to add or to remove"),
        (TagParams, {"add": [""]}, "empty"),
        (TagParams, {"add": ["x" * 65]}, "longer than 64"),
        (TagParams, {"add": ["a\nb"]}, "control character"),
        (SetParams, {}, "set a priority or fields"),
        (SetParams, {"priority": "hihg"}, "'low', 'normal', 'high' or 'urgent'"),
        (SetParams, {"fields": {"my plan": "x"}}, "is not a name"),
        (SetParams, {"fields": {"plan": "x" * 1001}}, "longer than 1000"),
        (SetParams, {"fields": {"plan": {"nested": 1}}}, "fields.plan"),
    ],
)
def test_bad_parameters_are_refused_precisely(model, values, message):
    with pytest.raises(ValidationError) as caught:
        model.model_validate(values)
    assert message in str(caught.value)


def test_the_plan_sees_the_change_and_describes_it():
    config = make_config()
    event = make_event(conversation={"tags": ["new"], "priority": "low"})
    tag_change = Tag.planned_change(TagParams(add=["vip"], remove=["new"]), event, config)
    assert tag_change.conversation.tags == ["vip"]
    set_change = SetState.planned_change(SetParams(priority="urgent"), event, config)
    assert set_change.conversation.priority == "urgent"
    context = make_context(event, config)
    assert SetState().describe(SetParams(priority="urgent"), context) == (
        "set on the conversation: priority low → urgent"
    )
    assert SetState().describe(SetParams(priority="low"), context) == (
        "set on the conversation: no change"
    )
    assert Tag().describe(TagParams(add=["vip"]), context) == (
        "tag the conversation: add vip (tags ['new'] → ['new', 'vip'])"
    )


def test_the_webhook_body_of_an_updated_event_says_what_changed():
    from rulekit.actions.webhook_body import event_document

    store = MemoryStore()
    _, [updated] = call(SetState(), SetParams(priority="urgent"), store)
    document = event_document(updated)
    assert document["event"] == "updated"
    assert document["changed"]["priority"] == {"from": None, "to": "urgent"}
    assert "changed" not in event_document(make_event())  # other events as before
