"""Time in the dry run: suites' `now`/`advance`/`at`, timers firing between inputs in order,
`rulekit test --now/--until`, and the Time section of docs/rules.md run as written."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from scaffold import EXAMPLES, REPO, write

from rulekit.audit.suites import report, run_suite
from rulekit.cli.main import cli
from rulekit.engine.engine import Engine

CONFIG = """
timezone: Europe/Berlin
channels:
  online-chat: {provider: chatra}
calendars:
  support:
    hours: {mon-fri: ["09:00-13:00", "14:00-18:00"]}
"""
RULES = """
- name: ping
  on: {channel: online-chat, event: [created, message]}
  after: 5m
  unless: "(conversation.last_agent_reply_at or trigger.occurred_at) > trigger.occurred_at"
  cancel_on: closed
  do: [{autoreply: {text: "ping {{ trigger.message.text }}"}}]
- name: restarting
  on: {channel: online-chat, event: message}
  if: "message.text == 'r'"
  after: 10m
  restart: true
  do: [{autoreply: {text: restarted}}]
- name: business
  on: {channel: online-chat, event: created}
  after: {business: 10m, calendar: support}
  do: [{autoreply: {text: business}}]
"""


def run(tmp_path: Path, suite: str) -> tuple[bool, str]:
    write(tmp_path / "rules.d" / "r.yaml", RULES)
    engine = Engine.from_path(tmp_path / "rules.d", write(tmp_path / "rulekit.yaml", CONFIG))
    result = run_suite(engine, write(tmp_path / "suite.yaml", suite))
    text, _, _ = report([result])
    return result.passed, text


def event(kind: str, text: str = "hi", author: str = "client", conv: str = "c1") -> str:
    return (
        f"{{event: {{channel: online-chat, event: {kind}, conversation: {{id: {conv}}}, "
        f"message: {{text: {text}, author: {author}}}}}}}"
    )


def test_timers_fire_between_inputs_in_order_at_their_due_time(tmp_path: Path) -> None:
    passed, text = run(
        tmp_path,
        f"""
        tests:
          - name: t
            now: 2026-12-04T17:50:00+01:00
            inputs:
              - {event("created", "one")}
              - advance: 1m
              - {event("created", "two", conv="c2")}
              - at: 2026-12-07T10:00:00+01:00
            expect:
              - {{rule: ping, params: {{text: ping one}}, at: "2026-12-04T17:55:00+01:00"}}
              - {{rule: ping, params: {{text: ping two}}, at: "2026-12-04T17:56:00+01:00"}}
              - {{rule: business, at: "2026-12-04T18:00:00+01:00"}}
              - {{rule: business, at: "2026-12-07T09:01:00+01:00"}}
            exact: true
        """,
    )
    assert passed, text


def test_an_expected_fire_time_must_match(tmp_path: Path) -> None:
    passed, text = run(
        tmp_path,
        f"""
        tests:
          - name: t
            now: 2026-12-07T10:00:00+01:00
            inputs: [{event("created")}, {{advance: 10m}}]
            expect:
              - {{rule: ping, at: "2026-12-07T10:06:00+01:00"}}
        """,
    )
    assert not passed
    assert "expected an action: rule='ping', at=2026-12-07T10:06:00+01:00" in text
    assert "+ autoreply (ping) at 2026-12-07T10:05:00+01:00" in text


def test_a_reply_in_time_a_cancel_and_a_kept_timer(tmp_path: Path) -> None:
    passed, text = run(
        tmp_path,
        f"""
        tests:
          - name: answered in time
            now: 2026-12-07T10:00:00+01:00
            inputs:
              - {event("created")}
              - advance: 4m
              - {event("agent_replied", "hello", "agent")}
              - advance: 10m
            expect_absent: [{{rule: ping}}]
          - name: answered too late
            now: 2026-12-07T10:00:00+01:00
            inputs:
              - {event("created")}
              - advance: 6m
              - {event("agent_replied", "hello", "agent")}
            expect: [{{rule: ping, at: "2026-12-07T10:05:00+01:00"}}]
          - name: closed cancels
            now: 2026-12-07T10:00:00+01:00
            inputs:
              - {event("created")}
              - advance: 1m
              - {event("closed")}
              - advance: 1h
            expect_absent: [{{rule: ping}}]
          - name: a second trigger keeps the first timer
            now: 2026-12-07T10:00:00+01:00
            inputs:
              - {event("created", "first")}
              - advance: 3m
              - {event("message", "second")}
              - advance: 1h
            expect: [{{rule: ping, params: {{text: ping first}}, at: "2026-12-07T10:05:00+01:00"}}]
            expect_absent: [{{rule: ping, params: {{text: ping second}}}}]
          - name: restart moves the timer
            now: 2026-12-07T10:00:00+01:00
            inputs:
              - {event("message", "r")}
              - advance: 8m
              - {event("message", "r")}
              - advance: 1h
            expect: [{{rule: restarting, at: "2026-12-07T10:18:00+01:00"}}]
        """,
    )
    assert passed, text
    assert text.count("✓") == 5


def test_moving_the_clock_back_is_an_error(tmp_path: Path) -> None:
    passed, text = run(
        tmp_path,
        """
        tests:
          - name: t
            now: 2026-12-07T10:00:00+01:00
            inputs: [{at: "2026-12-07T09:00:00+01:00"}]
            exact: true
        """,
    )
    assert not passed and "time never goes back" in text


def test_rulekit_test_simulates_time_and_runs_on_until(tmp_path: Path) -> None:
    rules = write(tmp_path / "rules.d" / "r.yaml", RULES).parent
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    first = write(
        tmp_path / "1.yaml",
        "{channel: online-chat, event: created, occurred_at: '2026-12-07T09:00:00Z',"
        " conversation: {id: c1}, message: {text: one, author: client}}",
    )
    second = write(
        tmp_path / "2.yaml",
        "{channel: online-chat, event: created, occurred_at: '2026-12-07T09:20:00Z',"
        " conversation: {id: c2}, message: {text: two, author: client}}",
    )
    runner = CliRunner()
    args = ["test", "--rules", str(rules), "--config", str(config), str(first), str(second)]
    out = runner.invoke(cli, [*args, "--until", "1h"]).output
    assert "would fire at 10:05 (5m) unless" in out
    # the first input's timer fires before the second input, the second's only with --until
    assert out.index("timer of 'ping' due 2026-12-07 10:05") < out.index("message (client): two")
    assert "── (clock advanced 1h)" in out
    assert "timer of 'ping' due 2026-12-07 10:25" in out
    # --now starts the clock: the second input comes 20 minutes later
    data = json.loads(
        runner.invoke(cli, [*args, "--now", "2026-12-08T14:00:00+01:00", "--format", "json"]).output
    )
    events = [e for r in data["results"] for e in r["events"]]
    first_event, fired, business, second_event = events[:4]
    assert business["timer"]["rule"] == "business"
    assert first_event["timers"][0]["due"] == "2026-12-08T14:05:00+01:00"
    assert fired["timer"]["outcome"] == "fired" and fired["actions"][0]["rule"] == "ping"
    assert second_event["event"]["occurred_at"] == "2026-12-08T13:20:00Z"
    bad = runner.invoke(cli, [*args, "--until", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_the_example_suites_and_the_docs_time_section_run_as_written(tmp_path: Path) -> None:
    engine = Engine.from_path(REPO / "rules.d", EXAMPLES / "rulekit.yaml")
    result = run_suite(engine, REPO / "rules.d" / "time-tests.yaml")
    assert result.passed, report([result])[0]
    assert len(result.tests) == 6

    text = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    section = text[text.index("## Time") : text.index("## Python API")]
    config, rules, suite = [block.split("```", 1)[0] for block in section.split("```yaml\n")[1:]]
    write(tmp_path / "rules.d" / "r.yaml", rules)
    config_path = write(
        tmp_path / "rulekit.yaml", config + "channels:\n  online-chat: {provider: chatra}\n"
    )
    engine = Engine.from_path(tmp_path / "rules.d", config_path)
    result = run_suite(engine, write(tmp_path / "suite.yaml", suite))
    assert result.passed and len(result.tests) == 2, report([result])[0]


def test_durations_past_a_thousand_years_are_load_errors_not_overflows_later(
    tmp_path: Path,
) -> None:
    """A duration added to a time must stay inside what ``datetime`` holds: ``after``,
    ``cooldown`` and ``max_late`` of a billion days loaded, then every matching event overflowed
    (a traceback from ``rulekit test``, an event set aside by the daemon)."""
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    for key, value in [("after", "999999999d"), ("cooldown", "999999999d"), ("after", "365001d")]:
        write(
            tmp_path / "rules.d" / "r.yaml",
            f"""
            - name: far
              on: {{channel: online-chat, event: created}}
              {key}: {value}
              do: [{{autoreply: {{text: later}}}}]
            """,
        )
        sample = write(
            tmp_path / "event.yaml",
            "{channel: online-chat, event: created, conversation: {id: c1},"
            " message: {text: hi, author: client}}",
        )
        result = CliRunner().invoke(cli, ["test", str(sample), "--config", str(config)])
        assert isinstance(result.exception, SystemExit), result.output  # no traceback
        assert result.exit_code == 1, result.output
        assert f"r.yaml:3: [0].{key}: rule 'far': '{value}' is too long a duration" in result.output
    write(
        tmp_path / "rules.d" / "r.yaml",
        """
        - name: far
          on: {channel: online-chat, event: created}
          after: 365000d
          cooldown: 365000d
          do: [{autoreply: {text: later}}]
        """,
    )
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0, result.output  # a thousand years is still a duration


def test_simulated_times_outside_1970_to_2200_are_one_line_errors(tmp_path: Path) -> None:
    """An input's time, ``--now``, a suite's ``now:``/``at:``/``advance:`` and ``--until`` move
    the simulated clock; past the times rulekit handles (as the daemon bounds a webhook's
    times), a timer or a cooldown counted from it overflowed with a traceback."""
    write(tmp_path / "rules.d" / "r.yaml", RULES)
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    far = write(
        tmp_path / "far.yaml",
        "{channel: online-chat, event: created, occurred_at: '9999-12-31T10:00:00+00:00',"
        " conversation: {id: c1}, message: {text: hi, author: client}}",
    )
    fine = write(
        tmp_path / "fine.yaml",
        "{channel: online-chat, event: created, conversation: {id: c2},"
        " message: {text: hi, author: client}}",
    )
    outside = "is outside the times rulekit handles (1970 to 2200)"

    def dry_run(*args: str) -> str:
        result = CliRunner().invoke(cli, ["test", *args, "--config", str(config)])
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result.output

    output = dry_run(str(far), str(fine))
    assert "far.yaml: the time of event " in output and outside in output
    assert "fine.yaml\n   event created on online-chat" in output  # the next input goes on
    output = dry_run(str(fine), "--now", "9999-12-31T00:00:00+00:00")
    assert "the time the clock starts at (9999-12-31T00:00:00+00:00) " + outside in output
    output = dry_run(str(fine), "--now", "2199-12-31T00:00:00+00:00", "--until", "365000d")
    assert "--until: the time the clock would move to (3199-05-03" in output
    passed, text = run(
        tmp_path,
        """
        tests:
          - name: at
            inputs: [{at: "9999-12-31T23:00:00+00:00"}]
            exact: true
          - name: now
            now: "9999-12-31T23:00:00+00:00"
            inputs: [EVENT]
            exact: true
          - name: advance
            now: "2199-12-31T23:00:00+00:00"
            inputs: [EVENT, {advance: 365000d}, {advance: 365000d}]
            exact: true
          - name: input
            now: "2026-12-07T10:00:00+01:00"
            inputs: [EVENT, FAR]
            exact: true
        """.replace("EVENT", event("created")).replace(
            "FAR", f"{{event: {far.read_text().strip()}}}"
        ),
    )
    assert not passed
    assert "- input 1: the time the clock would move to (9999-12-31T23:00:00+00:00) " in text
    assert "- now: the time the clock starts at (9999-12-31T23:00:00+00:00) " in text
    assert "- input 2: the time the clock would move to (3199-05-03T23:00:00+00:00) " in text
    assert "- input 2: the time of event " in text


def test_an_input_older_than_the_clock_is_evaluated_at_its_own_time(tmp_path: Path) -> None:
    """The daemon evaluates a webhook that arrives late at the event's own time (``now``,
    business hours, cooldowns); the dry run evaluated an input older than its clock at the
    clock's time, so inputs given out of time order (a folder of samples, in name order) met
    other hours than in production."""
    rules = write(
        tmp_path / "rules.d" / "r.yaml",
        "- name: hours\n  on: {channel: online-chat, event: created}\n"
        "  do: [{autoreply: {text: \"{{ now | datetime('%H:%M') }} "
        "{{ business_hours('support') }}\"}}]\n",
    )
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    evening, morning = (
        write(
            tmp_path / f"{name}.yaml",
            f"{{channel: online-chat, event: created, occurred_at: '2026-12-07T{hour}:00+01:00',"
            f" conversation: {{id: {name}}}, message: {{text: hi, author: client}}}}",
        )
        for name, hour in (("evening", "19"), ("morning", "10"))
    )
    result = CliRunner().invoke(
        cli,
        ["test", "--config", str(config), "--rules", str(rules.parent), "--format", "json",
         str(evening), str(morning)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    texts = [
        action["params"]["text"]
        for item in json.loads(result.stdout)["results"]
        for event in item["events"]
        for action in event["actions"]
    ]
    assert texts == ["19:00 False", "10:00 True"]


def test_a_suite_time_without_an_offset_is_an_error_of_the_suite(tmp_path: Path) -> None:
    """A suite's ``now:`` without a UTC offset (``2026-12-07T10:00:00``) stopped the dry run
    with a traceback comparing naive and aware times; like ``at:``, it is an error of the suite
    at its line."""
    passed, text = run(
        tmp_path,
        """
        tests:
          - name: t
            now: 2026-12-07T10:00:00
            inputs: [EVENT, {advance: 10m}]
            exact: true
        """.replace("EVENT", event("created")),
    )
    assert not passed
    assert "suite.yaml:3: tests[0].now: Input should have timezone info" in text


def test_an_expected_fire_time_in_the_hour_the_clocks_go_back_matches(tmp_path: Path) -> None:
    """A time of the hour the clocks go back is never equal to one written with an offset (so
    Python has it): a timer fired at 02:05 CEST that night failed ``at: ...T02:05:00+02:00``."""
    passed, text = run(
        tmp_path,
        """
        tests:
          - name: t
            now: 2026-10-25T02:00:00+02:00
            inputs: [EVENT, {advance: 10m}, {at: "2026-10-25T02:30:00+01:00"}]
            expect:
              - {rule: ping, at: "2026-10-25T02:05:00+02:00"}
              - {rule: restarting, at: "2026-10-25T02:10:00+02:00"}
        """.replace("EVENT", event("message", text="r")),
    )
    assert passed, text


def test_advance_is_real_time_after_a_timer_fired_at_the_clock(tmp_path: Path) -> None:
    """A timer firing where the clock stands left the clock at its due time, a time of the
    config's zone, on which ``advance: 24h`` moved the wall clock: 23 hours the day the clocks
    go forward, so the next input was evaluated an hour early."""
    passed, text = run(
        tmp_path,
        """
        tests:
          - name: t
            now: 2026-03-28T12:00:00+01:00
            inputs:
              - EVENT
              - {advance: 5m}
              - {advance: 24h}
              - {at: "2026-03-29T12:30:00+02:00"}
            exact: true
        """.replace("EVENT", event("created")),
    )
    assert not passed
    assert "at 2026-03-29T12:30:00+02:00 is before the clock (2026-03-29T11:05:00+00:00)" in text
