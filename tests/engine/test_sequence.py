"""A plan is a sequence: later conditions and templates see the earlier actions' changes."""

from __future__ import annotations

from scaffold import make_event

CONFIG = """
channels:
  online-chat: {provider: chatra, default_group: support}
groups: [support, sales]
agents:
  - {email: Anna@example.com, name: Anna, groups: [support], channels: [online-chat]}
  - {email: ben@example.com, groups: [sales], channels: [online-chat]}
  - {email: carl@example.com, groups: [sales], channels: []}
"""

ASSIGN_THEN_MORE = """
- name: route
  on: {channel: online-chat, event: created}
  do:
    - play_sound: {sound: bell, to: "{{ conversation.assignee or 'everyone' }}"}
    - assign: {agent: anna@example.com}
    - play_sound: {sound: chime, to: "{{ conversation.assignee or 'everyone' }}"}
- name: after routing
  on: {channel: online-chat, event: created}
  if: conversation.assignee == 'Anna@example.com'
  do:
    - play_sound: {sound: alert, to: everyone}
"""


def test_later_templates_and_conditions_see_an_earlier_assign(build_engine) -> None:
    engine = build_engine(ASSIGN_THEN_MORE, CONFIG)
    plan = engine.evaluate(make_event(conversation={"id": "c1"}), explain=True)
    assert [(a.rule, a.action, a.params.get("to")) for a in plan] == [
        ("route", "play_sound", "everyone"),  # before the assign: nobody yet
        ("route", "assign", None),
        ("route", "play_sound", "Anna@example.com"),
        ("after routing", "play_sound", "everyone"),
    ]
    # each action sees the event as the earlier ones left it; the plan's event is unchanged
    assert plan[0].seen is None and plan[2].seen is not None
    assert plan[2].seen.conversation.assignee == "Anna@example.com"
    assert plan.event.conversation.assignee is None
    assert plan.final.conversation.group == "support"


def test_an_assign_by_strategy_leaves_the_agent_to_the_run(build_engine) -> None:
    engine = build_engine(
        """
        - name: route
          on: {channel: online-chat, event: created}
          do:
            - assign: {group: sales}
            - autoreply: {text: "{{ conversation.group }}"}
        """,
        CONFIG,
    )
    plan = engine.evaluate(make_event(conversation={"id": "c1", "group": "support"}))
    assert plan[1].params["text"] == "sales"
    assert plan[0].decided_later == frozenset()
    assert plan[1].decided_later == {"assignee"}
    assert plan[1].seen.conversation.assignee is None


def test_an_agent_without_access_changes_nothing_in_the_plan(build_engine) -> None:
    engine = build_engine(
        """
        - name: route
          on: {channel: online-chat, event: created}
          do:
            - assign: {agent: "{{ 'carl@example.com' }}"}
            - autoreply: {text: "{{ conversation.assignee or 'nobody' }}"}
        """,
        CONFIG,
    )
    plan = engine.evaluate(make_event(conversation={"id": "c1"}))
    assert plan[1].params["text"] == "nobody"


INDEXED_AFTER_ASSIGN = """
- name: route
  on: {channel: online-chat, event: created}
  do:
    - assign: {agent: ben@example.com}
- name: for ben
  on: {channel: online-chat, event: created}
  if: conversation.assignee == 'ben@example.com'
  do:
    - play_sound: {sound: bell, to: everyone}
- name: for nobody
  on: {channel: online-chat, event: created}
  if: conversation.assignee == 'nobody@example.com'
  do:
    - play_sound: {sound: chime, to: everyone}
"""


def test_the_index_takes_the_changed_conversation_into_account(build_engine) -> None:
    # "for ben" is excluded by the index for the event as it arrived (no assignee); after the
    # assign it is a candidate, and it matches
    engine = build_engine(INDEXED_AFTER_ASSIGN, CONFIG)
    event = make_event(conversation={"id": "c1"})
    assert [
        r.name
        for r in engine.index.bucket("online-chat", "created").candidates(
            event, event.occurred_at, {}
        )
    ] == ["route"]
    plan = engine.evaluate(event, explain=True, excluded=True)
    assert [(a.rule, a.action) for a in plan] == [("route", "assign"), ("for ben", "play_sound")]
    reasons = {trace.name: trace.reason for trace in plan.rules}
    assert reasons["for ben"] == "conditions hold"
    assert reasons["for nobody"].startswith("not a candidate:")
    assert plan.excluded == 1


def test_an_assign_that_can_pick_nobody_changes_nothing_in_the_plan(build_engine) -> None:
    """An assign by strategy in a group none of whose agents has access to the channel picks
    nobody when it runs and changes nothing (not even the group): the plan says the same, so a
    reply after it is sent as the conversation had it (here: nobody to send as, which the dry
    run says), and later conditions do not see a group that is never set. Before, the plan
    had the group changed and an agent 'an earlier assign picks' to send the reply as."""
    engine = build_engine(
        """
        - name: route
          on: {channel: online-chat, event: created}
          do:
            - assign: {group: nobody_here}
            - assign: {agent: "{{ 'carl@example.com' }}", group: sales}
            - autoreply: {text: "{{ conversation.group or 'no group' }}"}
        """,
        CONFIG.replace("groups: [support, sales]", "groups: [support, sales, nobody_here]"),
    )
    plan = engine.evaluate(make_event(conversation={"id": "c1"}))
    assert plan[2].params["text"] == "no group"
    assert plan[2].decided_later == frozenset()
    assert plan.final.conversation.group is None and plan.final.conversation.assignee is None


def test_later_templates_see_a_field_set_to_an_equal_value_of_another_type(build_engine) -> None:
    engine = build_engine(
        """
        - name: flag
          on: {channel: online-chat, event: created}
          do:
            - set: {fields: {flag: true}}
            - play_sound:
                sound: bell
                to: "{{ 'everyone' if conversation.fields.flag is true else 'a@example.com' }}"
        """,
        CONFIG,
    )
    plan = engine.evaluate(make_event(conversation={"id": "c1", "fields": {"flag": 1}}))
    assert plan[1].params["to"] == "everyone"
