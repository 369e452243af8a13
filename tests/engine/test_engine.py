"""The engine: event (+ state) → plan, with traces, cooldowns, stop, loop protection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from scaffold import make_event

from rulekit import Engine, Event
from rulekit.store.memory import MemoryStore

T0 = datetime(2025, 3, 14, 10, 0, tzinfo=UTC)

TWO_RULES = """
- name: greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hi {{ client.name or 'there' }}"}
    - telegram: {chat_id: 42, text: "new chat from {{ client.name }}"}
- name: vip
  on: {channel: online-chat, event: [created, message]}
  if: client.custom.plan == 'gold'
  do:
    - play_sound: {sound: bell}
"""


def test_from_path_and_evaluate_give_rendered_params_with_defaults(build_engine) -> None:
    engine = build_engine(TWO_RULES)
    assert isinstance(engine, Engine)
    plan = engine.evaluate(make_event(client={"name": "Ana", "custom": {"plan": "gold"}}))
    assert [(a.rule, a.action) for a in plan] == [
        ("greet", "autoreply"),
        ("greet", "telegram"),
        ("vip", "play_sound"),
    ]
    assert plan[0].params == {"text": "Hi Ana", "on_recovered": False, "as_agent": None}
    assert plan[1].params == {
        "chat_id": 42,
        "text": "new chat from Ana",
        "parse_mode": "none",
        "message_thread_id": None,
    }
    assert plan[2].params["sound"] == "bell"
    assert all(a.skipped is None for a in plan)
    assert [a.action for a in engine.evaluate(make_event(event="message"))] == []


def test_public_api_from_the_package() -> None:
    import rulekit

    assert rulekit.Engine is Engine
    assert rulekit.Event is Event


def test_evaluate_without_state_has_no_side_effects(build_engine) -> None:
    engine = build_engine(
        """
        - name: once
          on: {channel: online-chat}
          cooldown: 30m
          do: [{autoreply: {text: hi}}]
        """
    )
    event = make_event(conversation={"id": "c1"}, occurred_at=T0)
    first = engine.evaluate(event)
    second = engine.evaluate(event)
    assert [a.rule for a in first] == [a.rule for a in second] == ["once"]

    store = MemoryStore()
    with store.transaction() as state:
        assert len(engine.evaluate(event, state)) == 1
        assert len(engine.evaluate(event, state)) == 1  # evaluate only reads the state
        assert state.cooldown_until("once", "c1") is None


def test_cooldown_blocks_within_the_window_and_allows_after(build_engine) -> None:
    engine = build_engine(
        """
        - name: once
          on: {channel: online-chat}
          cooldown: 30m
          do: [{autoreply: {text: hi}}]
        - name: always
          on: {channel: online-chat}
          do: [{play_sound: {sound: bell}}]
        """
    )
    event = make_event(conversation={"id": "c1"}, occurred_at=T0)
    other = make_event(conversation={"id": "c2"}, occurred_at=T0)
    store = MemoryStore()
    with store.transaction() as state:
        plan = engine.evaluate(event, state, now=T0)
        assert [a.rule for a in plan] == ["once", "always"]
        plan.apply(state)
        assert state.cooldown_until("once", "c1") == T0 + timedelta(minutes=30)

        later = engine.evaluate(event, state, now=T0 + timedelta(minutes=29), explain=True)
        assert [a.rule for a in later] == ["always"]
        trace = {t.name: t for t in later.rules}
        assert not trace["once"].matched
        assert "cooldown lasts until" in trace["once"].reason
        # another conversation has its own window
        assert [a.rule for a in engine.evaluate(other, state, now=T0)] == ["once", "always"]

        after = engine.evaluate(event, state, now=T0 + timedelta(minutes=31))
        assert [a.rule for a in after] == ["once", "always"]


def test_stop_hides_later_rules(build_engine) -> None:
    engine = build_engine(
        """
        - name: spam filter
          on: {channel: online-chat}
          if: "'casino' in message.text|lower"
          stop: true
          do: [{play_sound: {sound: alert}}]
        - name: greet
          on: {channel: online-chat}
          do: [{autoreply: {text: hi}}]
        """
    )
    for explain in (False, True):
        spam = engine.evaluate(make_event(message={"text": "Best CASINO"}), explain=explain)
        assert [a.rule for a in spam] == ["spam filter"]
        normal = engine.evaluate(make_event(message={"text": "hello"}), explain=explain)
        assert [a.rule for a in normal] == ["greet"]
    traces = engine.evaluate(make_event(message={"text": "casino"}), explain=True).rules
    assert traces[1].name == "greet"
    assert traces[1].matched is False
    assert traces[1].reason == "stopped by rule 'spam filter'"


def test_own_events_are_skipped_unless_allowed(build_engine) -> None:
    engine = build_engine(
        """
        - name: plain
          on: {channel: online-chat, event: assigned}
          do: [{play_sound: {sound: alert}}]
        - name: opted in
          on: {channel: online-chat, event: assigned}
          allow_own_events: true
          do: [{play_sound: {sound: bell}}]
        """
    )
    own = make_event(event="assigned", origin="rulekit")
    plan = engine.evaluate(own, explain=True)
    assert [a.rule for a in plan] == ["opted in"]
    assert "own event (origin rulekit)" in plan.rules[0].reason
    assert [a.rule for a in engine.evaluate(own)] == ["opted in"]
    outside = make_event(event="assigned")
    assert [a.rule for a in engine.evaluate(outside)] == ["plain", "opted in"]


def test_recovered_events_skip_client_facing_actions_only(build_engine) -> None:
    engine = build_engine(
        """
        - name: greet
          on: {channel: online-chat}
          do:
            - autoreply: {text: hi}
            - slack: {channel: '#a', text: new chat}
        - name: late but wanted
          on: {channel: online-chat}
          do:
            - autoreply: {text: sorry for the wait, on_recovered: true}
        """
    )
    plan = engine.evaluate(make_event(recovered=True))
    by_text = {a.params.get("text"): a for a in plan}
    assert "recovered" in by_text["hi"].skipped
    assert by_text["new chat"].skipped is None
    assert by_text["sorry for the wait"].skipped is None
    assert [a.params["text"] for a in plan.runnable] == ["new chat", "sorry for the wait"]
    assert all(a.skipped is None for a in engine.evaluate(make_event()))


def test_a_runtime_error_fails_only_its_rule(build_engine) -> None:
    engine = build_engine(
        """
        - name: fragile
          on: {channel: online-chat}
          if: message.text.endswith('x') or message.text|length > 5
          do: [{autoreply: {text: a}}]
        - name: sturdy
          on: {channel: online-chat}
          do: [{play_sound: {sound: bell}}]
        """
    )
    event = make_event(event="closed")  # no message: text is None
    assert [a.rule for a in engine.evaluate(event)] == ["sturdy"]
    plan = engine.evaluate(event, explain=True)
    assert [a.rule for a in plan] == ["sturdy"]
    fragile = plan.rules[0]
    assert fragile.name == "fragile" and not fragile.matched
    assert fragile.reason.startswith("condition failed:")
    assert "cannot read 'endswith' of None" in fragile.reason
    assert fragile.conditions[0].error is not None
    assert [a.rule for a in engine.evaluate(make_event(message={"text": "box"}))] == [
        "fragile",
        "sturdy",
    ]


def test_a_template_error_drops_only_that_action(build_engine) -> None:
    engine = build_engine(
        """
        - name: r
          on: {channel: online-chat}
          do:
            - autoreply: {text: "{{ message.text.upper() }}"}
            - play_sound: {sound: bell}
        """
    )
    plan = engine.evaluate(make_event(), explain=True)
    assert [a.action for a in plan] == ["play_sound"]
    assert plan.errors == [
        "rule 'r': autoreply: cannot read 'upper' of None (the value is missing)"
    ]
    assert "autoreply not planned" in plan.rules[0].reason


def test_explain_lists_each_condition(build_engine) -> None:
    engine = build_engine(
        """
        - name: r
          on: {channel: online-chat}
          if:
            - client.country == 'DE'
            - any: ["client.email", "client.phone"]
          do: [{autoreply: {text: x}}]
        """
    )
    plan = engine.evaluate(make_event(client={"country": "DE", "email": "a@b.c"}), explain=True)
    trace = plan.rules[0]
    assert trace.matched and trace.reason == "conditions hold"
    assert [(c.source, c.result, c.evaluated) for c in trace.conditions] == [
        ("client.country == 'DE'", True, True),
        ("client.email", True, True),
        ("client.phone", None, False),
    ]
    plan = engine.evaluate(make_event(client={"country": "DE"}), explain=True)
    assert plan.rules[0].reason == "conditions do not hold"
    assert plan.rules[0].as_dict()["trace"]["conditions"][1]["result"] is False


def test_every_path_evaluates_only_candidates_and_explains_the_others_on_request(
    build_engine,
) -> None:
    engine = build_engine(
        """
        - name: corporate
          on: {channel: online-chat}
          if: client.email.endswith('@bigcorp.example')
          do: [{play_sound: {sound: bell}}]
        - name: germans
          on: {channel: online-chat}
          if: "client.country in ['DE', 'AT']"
          do: [{play_sound: {sound: bell}}]
        - name: refunds
          on: {channel: online-chat}
          if: "'refund' in message.text|lower"
          do: [{play_sound: {sound: bell}}]
        """
    )
    event = make_event(client={"country": "FR", "email": "a@small.example"})
    plan = engine.evaluate(event, explain=True)
    assert plan.rules == [] and plan.excluded == 3  # the daemon's compact trace
    plan = engine.evaluate(event, explain=True, excluded=True)
    assert [(t.name, t.matched, t.reason) for t in plan.rules] == [
        ("corporate", False, "not a candidate: client.email does not end with '@bigcorp.example'"),
        ("germans", False, "not a candidate: client.country is not one of 'DE', 'AT'"),
        ("refunds", False, "not a candidate: message.text|lower does not contain 'refund'"),
    ]
    anonymous = make_event(client={"country": "DE"}, message={"text": "A REFUND please"})
    plan = engine.evaluate(anonymous, explain=True, excluded=True)
    assert [(t.name, t.matched, t.reason) for t in plan.rules] == [
        ("corporate", False, "not a candidate: client.email is None, not text"),
        ("germans", True, "conditions hold"),
        ("refunds", True, "conditions hold"),
    ]
    assert plan.excluded == 1


def test_a_field_that_cannot_be_read_makes_its_rules_candidates(build_engine) -> None:
    engine = build_engine(
        """
        - name: by domain
          on: {channel: online-chat}
          if: "conversation.assignee.domain == 'x'"
          do: [{play_sound: {sound: bell}}]
        """
    )
    # no assignee: reading `domain` raises; the rule is evaluated, and says so, on every path
    plan = engine.evaluate(make_event(event="closed"), explain=True)
    assert plan.excluded == 0
    assert plan.rules[0].reason.startswith("condition failed:")


def test_now_is_in_the_config_timezone(build_engine) -> None:
    engine = build_engine(
        """
        - name: r
          on: {channel: online-chat}
          if: now.hour == 11
          do: [{autoreply: {text: "{{ now.isoformat() }}"}}]
        """,
        "timezone: Europe/Berlin\n",
    )
    plan = engine.evaluate(make_event(occurred_at=T0))  # 10:00 UTC is 11:00 in Berlin
    assert plan[0].params["text"] == "2025-03-14T11:00:00+01:00"
    assert len(engine.evaluate(make_event(), now=datetime(2025, 7, 1, 9, 0, tzinfo=UTC))) == 1
    assert len(engine.evaluate(make_event(), now=datetime(2025, 7, 1, 11, 0, tzinfo=UTC))) == 0


def test_env_exposes_only_allowed_variables(build_engine, monkeypatch) -> None:
    monkeypatch.setenv("SUPPORT_CHAT", "-100")
    monkeypatch.setenv("SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("RULEKIT_TEAM", "blue")
    monkeypatch.setenv("RULEKIT_CONFIG", "/etc/rulekit.yaml")
    engine = build_engine(
        """
        - name: r
          on: {channel: online-chat}
          do:
            - autoreply:
                text: "{{ env.SUPPORT_CHAT }}|{{ env.SECRET_TOKEN }}|\\
                  {{ env.RULEKIT_TEAM }}|{{ env.RULEKIT_CONFIG }}"
        """,
        "env: [SUPPORT_CHAT]\n",
    )
    assert engine.evaluate(make_event())[0].params["text"] == "-100||blue|"


@pytest.mark.parametrize("explain", [False, True])
def test_channel_and_event_lists_and_wildcards(build_engine, explain: bool) -> None:
    engine = build_engine(
        """
        - name: any channel
          on: {event: reopened}
          do: [{play_sound: {sound: alert}}]
        - name: two events
          on: {channel: online-chat, event: [created, reopened]}
          do: [{play_sound: {sound: bell}}]
        - name: everything
          on: {}
          do: [{play_sound: {sound: chime}}]
        """
    )

    def rules(**fields) -> list[str]:
        return [a.rule for a in engine.evaluate(make_event(**fields), explain=explain)]

    assert rules(event="reopened") == ["any channel", "two events", "everything"]
    assert rules(event="created") == ["two events", "everything"]
    assert rules(channel="web", event="reopened") == ["any channel", "everything"]
    assert rules(channel="web", event="closed") == ["everything"]
