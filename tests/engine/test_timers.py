"""The engine's side of time: business_hours/next_open/now, the datetime filter, timed rules
setting and cancelling timers, and a due timer's plan (unless, max_late, trigger)."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from scaffold import make_event

BERLIN = ZoneInfo("Europe/Berlin")
CONFIG = """
timezone: Europe/Berlin
channels:
  online-chat: {provider: chatra}
calendars:
  support:
    hours: {mon-fri: ["09:00-13:00", "14:00-18:00"]}
    holidays: ["2026-12-24..2026-12-26"]
  night:
    timezone: America/New_York
    hours: {mon-sun: ["22:00-06:00"]}
"""
MONDAY_10 = datetime(2026, 12, 7, 10, 0, tzinfo=BERLIN)
MONDAY_20 = datetime(2026, 12, 7, 20, 0, tzinfo=BERLIN)


def test_business_hours_and_next_open_read_the_time_they_are_given(build_engine) -> None:
    engine = build_engine(
        """
        - name: closed
          on: {channel: online-chat}
          if: not business_hours('support')
          do:
            - autoreply:
                text: >-
                  Back {{ next_open('support') | datetime('%a %H:%M') }},
                  now {{ now | datetime('%H:%M') }}
        - name: open
          on: {channel: online-chat}
          if: business_hours('support') and next_open('support') == now
          do: [{autoreply: {text: open}}]
        """,
        CONFIG,
    )
    plan = engine.evaluate(make_event(), now=MONDAY_20)
    assert [(a.rule, a.params["text"]) for a in plan] == [("closed", "Back Tue 09:00, now 20:00")]
    plan = engine.evaluate(make_event(), now=MONDAY_10)
    assert [a.rule for a in plan] == ["open"]


def test_the_datetime_filter_shows_calendar_times_in_their_zone_others_in_the_configs(
    build_engine,
) -> None:
    engine = build_engine(
        """
        - name: r
          on: {channel: online-chat}
          do:
            - autoreply:
                text: >-
                  {{ next_open('night') | datetime('%H:%M %Z') }} /
                  {{ message.created_at | datetime('%H:%M %Z') }} /
                  {% if business_hours('night') %}open{% else %}closed{% endif %}
        """,
        CONFIG,
    )
    event = make_event(message={"text": "x", "created_at": "2026-12-07T09:00:00Z"})
    (action,) = engine.evaluate(event, now=MONDAY_10)
    # 10:00 in Berlin is 04:00 in New York: the night calendar is open; the message at 09:00 UTC
    # is 10:00 in Berlin (the config's zone)
    assert action.params["text"] == "04:00 EST / 10:00 CET / open"


def test_a_timed_rule_sets_a_timer_instead_of_acting(build_engine) -> None:
    engine = build_engine(
        """
        - name: ping
          on: {channel: online-chat, event: created}
          after: {business: 10m, calendar: support}
          unless: conversation.last_agent_reply_at
          cancel_on: [agent_replied, closed]
          do: [{autoreply: {text: "late {{ trigger.message.text }}"}}]
        """,
        CONFIG,
    )
    friday = datetime(2026, 12, 4, 17, 55, tzinfo=BERLIN)
    plan = engine.evaluate(make_event(conversation={"id": "c1"}), now=friday, explain=True)
    assert list(plan) == []
    (timer,) = plan.timers
    assert (timer.rule, timer.conversation_id) == ("ping", "c1")
    assert timer.due == datetime(2026, 12, 7, 9, 5, tzinfo=BERLIN)
    # Monday's, not today's 09:05
    reason = plan.rules[0].reason
    assert "would fire at Mon 2026-12-07 09:05 (10m of business time (support)) unless" in reason
    replied = make_event(event="agent_replied", conversation={"id": "c1"})
    assert [(c.rule, c.conversation_id) for c in engine.evaluate(replied).cancels] == [
        ("ping", "c1")
    ]
    assert engine.evaluate(make_event(event="message", conversation={"id": "c1"})).cancels == []
    # an event without a conversation sets no timer (and is no error)
    plan = engine.evaluate(make_event(), now=friday, explain=True)
    assert plan.timers == [] and plan.errors == []


def test_a_due_timer_sees_the_conversation_now_and_the_trigger_then(build_engine) -> None:
    engine = build_engine(
        """
        - name: ping
          on: {channel: online-chat, event: created}
          after: 5m
          max_late: 10m
          unless: "(conversation.last_agent_reply_at or trigger.occurred_at) > trigger.occurred_at"
          do:
            - autoreply:
                text: "{{ event }}/{{ trigger.message.text }}/{{ conversation.assignee }}"
        """,
        CONFIG,
    )
    trigger = make_event(
        occurred_at=MONDAY_10, conversation={"id": "c1"}, message={"text": "hello"}
    )
    due = MONDAY_10 + timedelta(minutes=5)
    current = trigger.conversation.model_copy(update={"assignee": "anna@shop.example"})
    fired = engine.fire("ping", trigger.at_fire_time(current, None), due, due)
    assert fired.firing is not None and fired.firing.outcome == "fired"
    assert [a.params["text"] for a in fired] == ["created/hello/anna@shop.example"]

    answered = current.model_copy(update={"last_agent_reply_at": MONDAY_10 + timedelta(minutes=2)})
    plan = engine.fire("ping", trigger.at_fire_time(answered, None), due, due, explain=True)
    assert list(plan) == [] and plan.firing is not None and plan.firing.outcome == "unless"
    # a reply from before the trigger does not count
    old = current.model_copy(update={"last_agent_reply_at": MONDAY_10 - timedelta(minutes=2)})
    assert len(engine.fire("ping", trigger.at_fire_time(old, None), due, due)) == 1

    late = engine.fire(
        "ping", trigger.at_fire_time(current, None), due, due + timedelta(minutes=11)
    )
    assert list(late) == [] and late.firing is not None and late.firing.outcome == "dropped"
    assert late.firing.reason == "11m late, over max_late 10m"
    # a webhook replayed a long time after it happened: readable, not 5.41183e+07s
    long_late = engine.fire(
        "ping",
        trigger.at_fire_time(current, None),
        due,
        due.astimezone(ZoneInfo("UTC")) + timedelta(days=626, seconds=28901),  # (real time)
    )
    assert long_late.firing is not None
    assert long_late.firing.reason == "626d 8h late, over max_late 10m"
    on_time = engine.fire(
        "ping", trigger.at_fire_time(current, None), due, due + timedelta(minutes=9)
    )
    assert on_time.firing is not None and on_time.firing.late == timedelta(minutes=9)
    assert len(on_time) == 1

    gone = engine.fire("no such rule", trigger, due, due)
    assert gone.firing is not None and gone.firing.outcome == "gone" and list(gone) == []


def test_trigger_is_the_event_itself_in_rules_without_after(build_engine) -> None:
    engine = build_engine(
        """
        - name: r
          on: {channel: online-chat}
          if: trigger.event == event and trigger.id == 'e1'
          do: [{autoreply: {text: "{{ trigger.message.text }}"}}]
        """,
        CONFIG,
    )
    (action,) = engine.evaluate(make_event(id="e1", message={"text": "hi"}))
    assert action.params["text"] == "hi"


def test_trigger_does_not_show_the_raw_payload(build_engine) -> None:
    import pytest

    from rulekit.errors import ValidationErrors

    with pytest.raises(ValidationErrors, match="raw"):
        build_engine(
            """
            - name: r
              on: {channel: online-chat}
              if: trigger.raw
              do: [{autoreply: {text: x}}]
            """,
            CONFIG,
        )


def test_the_idle_close_rule_of_plugins_md_restarts_on_each_message(build_engine) -> None:
    from scaffold import REPO

    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text[text.index('### 6. Time: "close after N idle"') :]
    rules = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    engine = build_engine(rules, CONFIG)
    plan = engine.evaluate(
        make_event(event="message", conversation={"id": "c1"}), now=MONDAY_10, explain=True
    )
    (timer,) = plan.timers
    assert timer.restart and timer.due == MONDAY_10 + timedelta(minutes=30)
    closed = engine.evaluate(make_event(event="closed", conversation={"id": "c1"}))
    assert [c.rule for c in closed.cancels] == ["Close chats idle for 30 minutes"]


def test_business_time_a_calendar_does_not_reach_is_an_error_saying_which(build_engine) -> None:
    """No timer when the calendar does not reach the business time within the two years it
    looks ahead: a calendar that never opens says so; one that opens, yet not for that long
    in all (400 days of open time out of 8 hours a weekday), says that, not that it never
    opens."""
    config = CONFIG + "  never:\n    hours: {}\n"
    for calendar, problem in (
        ("never", "calendar 'never' does not open within two years"),
        ("support", "calendar 'support' is not open 400d in all within two years"),
    ):
        engine = build_engine(
            f"""
            - name: ping
              on: {{channel: online-chat, event: created}}
              after: {{business: 400d, calendar: {calendar}}}
              do:
                - autoreply: {{text: late}}
            """,
            config,
        )
        plan = engine.evaluate(make_event(conversation={"id": "c1"}), now=MONDAY_10)
        assert plan.timers == []
        assert plan.errors == [f"rule 'ping': no timer: {problem}"]


def test_delays_cooldowns_and_lateness_are_real_time_across_dst(build_engine) -> None:
    """``after:``, ``cooldown`` and ``max_late`` count real time. They were added to (and
    subtracted from) times of the config's zone, which Python does on the wall clock: ``after:
    24h`` from noon before the change to summer time fired after 23 hours, ``after: 20m`` from
    02:50 the night the clocks go back after 80 minutes, a cooldown of 1h that night lasted
    two, and the dry run measured a timer's lateness on the wall clock too."""
    engine = build_engine(
        """
        - name: day
          on: {channel: online-chat, event: created}
          after: 24h
          do: [{tag: {add: [late]}}]
        - name: short
          on: {channel: online-chat, event: created}
          after: 20m
          max_late: 30m
          do: [{tag: {add: [late]}}]
        - name: cooling
          on: {channel: online-chat, event: message}
          cooldown: 1h
          do: [{tag: {add: [seen]}}]
        """,
        CONFIG.replace("channels:", "tags: [late, seen]\nchannels:"),
    )
    utc = ZoneInfo("UTC")
    spring = datetime(2026, 3, 28, 11, 0, tzinfo=utc)  # noon in Berlin, the day before
    plan = engine.evaluate(make_event(conversation={"id": "c1"}), now=spring)
    assert {t.rule: t.due - spring for t in plan.timers}["day"] == timedelta(hours=24)
    autumn = datetime(2026, 10, 25, 0, 50, tzinfo=utc)  # 02:50 CEST, then 02:00 CET again
    plan = engine.evaluate(make_event(conversation={"id": "c1"}), now=autumn)
    assert {t.rule: t.due - autumn for t in plan.timers}["short"] == timedelta(minutes=20)
    plan = engine.evaluate(make_event(event="message", conversation={"id": "c1"}), now=autumn)
    (cooldown,) = plan.cooldowns
    assert cooldown.until - autumn == timedelta(hours=1)
    # a timer due 02:40 CEST fired at 02:20 CET is 40 minutes late: dropped
    due = datetime(2026, 10, 25, 0, 40, tzinfo=utc).astimezone(BERLIN)
    fired_at = datetime(2026, 10, 25, 1, 20, tzinfo=utc).astimezone(BERLIN)
    event = make_event(conversation={"id": "c1"})
    plan = engine.fire("short", event, due, fired_at)
    assert plan.firing is not None and plan.firing.outcome == "dropped"
    assert plan.firing.late == timedelta(minutes=40)
