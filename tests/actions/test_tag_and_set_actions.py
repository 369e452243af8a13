"""tag and set: conversation state changed in the store, one ``updated`` event per change."""

from __future__ import annotations

import asyncio

import pytest
from action_helpers import make_config, make_context, make_event
from pydantic import ValidationError

from rulekit.actions.assign import Assign, AssignParams
from rulekit.actions.set_state import SetParams, SetState
from rulekit.actions.tag import Tag, TagParams
from rulekit.config import RawConfig
from rulekit.errors import PermanentActionError
from rulekit.event import Conversation
from rulekit.store.memory import MemoryStore
from rulekit.store.records import JobSpec, NewEvent
from rulekit.store.sqlite import SQLiteStore


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
        (TagParams, {"add": ["vip", "new"], "remove": ["new"]}, "'new' is both added and removed"),
        (TagParams, {"add": ["cafe\u0301"], "remove": ["caf\u00e9"]}, "both added and removed"),
        (SetParams, {}, "set a priority or fields"),
        (SetParams, {"priority": "hihg"}, "'low', 'normal', 'high' or 'urgent'"),
        (SetParams, {"fields": {"my plan": "x"}}, "is not a name"),
        (SetParams, {"fields": {"_internal": "x"}}, "starting with a letter"),
        (SetParams, {"fields": {"__class__": "x"}}, "is not a name"),
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


@pytest.mark.parametrize(
    ("action", "params", "emitted"),
    [
        (Tag(), TagParams(add=["vip"]), ["updated"]),
        (SetState(), SetParams(priority="urgent", fields={"plan": "gold"}), ["updated"]),
        (Assign(), AssignParams(strategy="round_robin"), ["assigned", "updated"]),
    ],
    ids=["tag", "set", "assign"],
)
def test_a_call_made_again_after_a_crash_answers_what_the_first_changed(
    tmp_path, action, params, emitted
):
    """The daemon stops after the change is committed, before the call's outcome is: the
    call made again after the lease (same job) finds the change noted with it and answers the
    same, its events included; before, it found nothing to change and emitted nothing."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        event = make_event()
        spec = JobSpec("r", action.name, params.model_dump(), "conversation")
        with store.transaction() as state:
            assert state.record_event(event, inbox_id=None, trace={}, jobs=[spec])
            [job] = state.jobs(status="pending")
        config = make_config(default_group="support")
        first = make_context(event, config, store=store, job_id=job.id)
        result = asyncio.run(action.execute(params, first))  # the daemon dies after this
        assert [e.event for e in first.emitted] == emitted
        again = make_context(event, config, store=store, job_id=job.id)
        assert asyncio.run(action.execute(params, again)) == result
        assert [e.model_dump() for e in again.emitted] == [e.model_dump() for e in first.emitted]
        with store.transaction() as state:  # the outcome replaces the note
            state.record_attempt(job.id, "done", result=result)
            assert state.applied_change(job.id) is None
        # another job (a later plan's) finds nothing to change: no event
        with store.transaction() as state:
            later = make_event(id="later")
            state.record_event(later, inbox_id=None, trace={}, jobs=[spec])
            [job] = state.jobs(status="pending")
        other = make_context(later, config, store=store, job_id=job.id)
        asyncio.run(action.execute(params, other))
        assert other.emitted == [] or action.name == "assign"
    finally:
        store.close()


def test_the_note_of_a_change_is_no_result_of_its_job(tmp_path):
    """Until the outcome is recorded, the job shows no result (the console, rulekit why)."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        spec = JobSpec("r", "tag", {"add": ["vip"]}, "conversation")
        with store.transaction() as state:
            state.record_event(make_event(), inbox_id=None, trace={}, jobs=[spec])
            [job] = state.jobs(status="pending")
        context = make_context(make_event(), make_config(), store=store, job_id=job.id)
        asyncio.run(Tag().execute(TagParams(add=["vip"]), context))
        with store.transaction() as state:
            [job] = state.jobs(status="pending")
            assert job.result is None
            assert state.applied_change(job.id) is not None
    finally:
        store.close()


def test_a_full_conversation_refuses_more_tags_and_fields_and_drops_none():
    """At most 50 tags and 50 fields: a call that would make more fails, saying so, in the
    daemon, the console and the dry run alike, and changes nothing. Before, a tag added to a
    conversation with 50 silently dropped its oldest (``vip``, set first), and a 51st field
    was silently not set while the call answered it was."""
    store = MemoryStore()
    tags = ["vip", *(f"t{n}" for n in range(49))]
    fields = {f"f{n}": n for n in range(50)}
    seed(store, tags=tags, fields=fields)
    event = make_event(conversation={"tags": tags, "fields": fields})
    config = make_config()
    context = make_context(event, config, store=store)
    with pytest.raises(PermanentActionError, match="at most 50 tags: this would make 51"):
        asyncio.run(Tag().execute(TagParams(add=["client-said-so"]), context))
    with pytest.raises(PermanentActionError, match="at most 50 fields: this would make 51"):
        asyncio.run(SetState().execute(SetParams(fields={"extra": "x"}), context))
    assert stored(store).tags == tags and stored(store).fields == fields
    assert context.emitted == []
    # the dry run says the same, and plans no change
    assert "at most 50 tags" in (Tag().would_fail(TagParams(add=["x"]), context) or "")
    assert "at most 50 fields" in (
        SetState().would_fail(SetParams(fields={"extra": 1}), context) or ""
    )
    assert Tag.planned_change(TagParams(add=["x"]), event, config).conversation.tags == tags
    assert SetState.planned_change(SetParams(fields={"x": 1}), event, config).conversation == (
        event.conversation
    )
    # making room first works, in one call too; changing what is there is no growth
    result, _ = call(Tag(), TagParams(add=["new"], remove=["t0"]), store, event=event)
    assert result["tags"][-1] == "new" and "vip" in result["tags"]
    result, _ = call(SetState(), SetParams(fields={"f1": "changed"}), store, event=event)
    assert stored(store).fields["f1"] == "changed"
    assert Tag().would_fail(TagParams(add=["vip"]), context) is None


def test_a_tag_is_one_tag_whichever_way_its_accents_are_written():
    """Tags are kept in Unicode's composed form (NFC): ``café`` with a combining accent (as a
    client's value or another keyboard may write it) is the tag ``café``, not a second tag
    that looks the same, and it is one of the config's ``tags:`` however either is written."""
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert TagParams(add=[decomposed]).add == [composed]
    assert TagParams(remove=[f" {decomposed} "]).remove == [composed]
    store = MemoryStore()
    seed(store, tags=[composed])
    result, emitted = call(Tag(), TagParams(add=[decomposed]), store)
    assert result["changed"] is False and emitted == [] and stored(store).tags == [composed]
    config = make_config()
    config.raw = RawConfig(tags=[decomposed, "vip"])
    assert config.raw.tags == [composed, "vip"]
    context = make_context(make_event(), config, store=store)
    assert Tag().would_fail(TagParams(add=[decomposed]), context) is None
    result, _ = call(Tag(), TagParams(add=["vip"], remove=[decomposed]), store, config)
    assert result["tags"] == ["vip"]


@pytest.mark.parametrize(("old", "new"), [(1, True), (True, 1), (0, False), (1, 1.0), (2.0, 2)])
def test_a_field_set_to_an_equal_value_of_another_type_changes(old, new):
    """``true`` over ``1`` is a change (``is true`` reads it differently): it is written and
    is an ``updated`` event. Before, Python's 1 == True made it no change, never written."""
    store = MemoryStore()
    seed(store, fields={"flag": old})
    result, [updated] = call(SetState(), SetParams(fields={"flag": new}), store)
    assert result["changed"] is True
    stored_value = stored(store).fields["flag"]
    assert (type(stored_value), stored_value) == (type(new), new)
    assert updated.changed["fields"] == {"flag": {"from": old, "to": new}}
    # the same value, of the same type, again: no change
    result, emitted = call(SetState(), SetParams(fields={"flag": new}), store)
    assert result["changed"] is False and emitted == []


def test_a_tag_from_before_the_configured_list_can_be_removed():
    """A conversation tagged before the config listed ``tags:`` keeps a tag outside the list:
    removing it is allowed when a call runs (the console, a templated name), adding one is
    not. Before, every call naming it failed, so nobody could remove it."""
    store = MemoryStore()
    seed(store, tags=["legacy", "vip"])
    config = make_config()
    config.raw = RawConfig(tags=["vip", "billing"])
    event = make_event(conversation={"tags": ["legacy", "vip"]})
    context = make_context(event, config, store=store)
    assert Tag().would_fail(TagParams(remove=["legacy"]), context) is None
    result, [updated] = call(Tag(), TagParams(remove=["legacy"]), store, config)
    assert result["tags"] == ["vip"] and updated.changed["tags"]["removed"] == ["legacy"]
    with pytest.raises(PermanentActionError, match="unknown tag 'legacy'"):
        call(Tag(), TagParams(add=["legacy"]), store, config)
    # a rule's literal name to remove is still checked when the rules load (a typo)
    assert Tag.check(TagParams(remove=["vpi"]), [], config) == [
        "unknown tag 'vpi' (did you mean 'vip'?) (config: tags)"
    ]


def test_a_field_from_before_the_configured_list_can_be_removed():
    """``null`` removes a field outside the config's ``fields:`` list (a conversation set
    before the list); setting one is still refused, and a rule's null of a name outside the
    list is a warning when the rules load (a typo would remove nothing). Before, such a field
    could never be removed: the rule did not load, and the call left it anyway."""
    store = MemoryStore()
    seed(store, fields={"legacy": "x", "plan": "gold"})
    config = make_config()
    config.raw = RawConfig(fields=["plan"])
    params = SetParams(fields={"legacy": None})
    assert SetState.check(params, [], config) == []
    assert SetState.lint(params, config) == [
        "unknown field 'legacy' (config: fields): null removes it only from conversations set "
        "before the list (a typo removes nothing)"
    ]
    event = make_event(conversation={"fields": {"legacy": "x", "plan": "gold"}})
    assert SetState().would_fail(params, make_context(event, config, store=store)) is None
    assert SetState.planned_change(params, event, config).conversation.fields == {"plan": "gold"}
    _, [updated] = call(SetState(), params, store, config)
    assert stored(store).fields == {"plan": "gold"}
    assert updated.changed["fields"] == {"legacy": {"from": "x", "to": None}}
    with pytest.raises(PermanentActionError, match="unknown field 'legacy'"):
        call(SetState(), SetParams(fields={"legacy": "y"}), store, config)


def test_a_note_that_no_longer_reads_is_passed_over(tmp_path):
    """A note whose values were erased (rulekit forget scrubs a job's result) is not an error:
    the call is made again, and finds nothing left to change."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        spec = JobSpec("r", "tag", {"add": ["vip"]}, "conversation")
        with store.transaction() as state:
            state.record_event(make_event(), inbox_id=None, trace={}, jobs=[spec])
            [job] = state.jobs(status="pending")
        context = make_context(make_event(), make_config(), store=store, job_id=job.id)
        asyncio.run(Tag().execute(TagParams(add=["vip"]), context))
        with store.transaction() as state:
            state.note_applied_change(job.id, {"result": "[forgotten]", "emitted": ["[forgotten]"]})
        again = make_context(make_event(), make_config(), store=store, job_id=job.id)
        result = asyncio.run(Tag().execute(TagParams(add=["vip"]), again))
        assert result["changed"] is False and again.emitted == []
    finally:
        store.close()


def test_a_finished_job_made_again_by_hand_emits_another_event(tmp_path):
    """A done ``tag`` job requeued (``rulekit retry``) after an agent undid its change makes it
    anew: its ``updated`` event, alike the first, is another event, not taken for a
    redelivery of the first and dropped. A call made again before its outcome is recorded
    (a crash) answers the same event as the first."""
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        event = make_event()
        spec = JobSpec("r", "tag", {"add": ["vip"]}, "conversation")
        with store.transaction() as state:
            state.record_event(event, inbox_id=None, trace={}, jobs=[spec])
            [job] = state.jobs(status="pending")
        config = make_config()
        params = TagParams(add=["vip"])

        def made() -> tuple[dict, list]:
            context = make_context(event, config, store=store, job_id=job.id)
            result = asyncio.run(Tag().execute(params, context))
            return result, context.emitted

        result, [first] = made()
        with store.transaction() as state:
            state.record_attempt(job.id, "done", result=result)
            key, conversation = state.find_conversation("online-chat", "conv-1")
            state.save_conversation(
                "online-chat", key, conversation.model_copy(update={"tags": []})
            )
            assert state.requeue_job(job.id)
        result, [second] = made()
        assert second.changed == first.changed
        assert second.id != first.id
        _, [again] = made()  # the daemon stopped before recording the outcome
        assert again.id == second.id
        with store.transaction() as state:
            state.record_attempt(job.id, "done", result=result)
            recorded = state.record_events([NewEvent(e, None, {}, []) for e in (first, second)])
        assert recorded == [True, True]
    finally:
        store.close()
