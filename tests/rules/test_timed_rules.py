"""Loading timed rules and calendar references: `after:` and its companions, errors at file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scaffold import write

from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.errors import ValidationErrors

CONFIG = """
timezone: Europe/Berlin
channels:
  online-chat: {provider: chatra}
calendars:
  support:
    hours: {mon-fri: ["09:00-17:00"]}
"""


def load(tmp_path: Path, rules: str) -> Engine:
    write(tmp_path / "rules.d" / "r.yaml", rules)
    return Engine.from_path(tmp_path / "rules.d", write(tmp_path / "rulekit.yaml", CONFIG))


def errors(tmp_path: Path, rules: str) -> list[str]:
    with pytest.raises(ValidationErrors) as caught:
        load(tmp_path, rules)
    return [str(error) for error in caught.value.errors]


def test_a_timed_rule_compiles_its_timing(tmp_path: Path) -> None:
    engine = load(
        tmp_path,
        """
        - name: ping
          on: {channel: online-chat, event: created}
          after: {business: 10m, calendar: support}
          unless: conversation.last_agent_reply_at
          cancel_on: agent_replied
          restart: true
          max_late: 30m
          do: [{autoreply: {text: hi}}]
        - name: plain
          on: {channel: online-chat}
          after: 90s
          do: [{autoreply: {text: hi}}]
        """,
    )
    timing = engine.rules[0].timing
    assert timing is not None
    assert (timing.after.total_seconds(), timing.calendar) == (600, "support")
    assert timing.cancel_on == ("agent_replied",)
    assert timing.restart and timing.max_late.total_seconds() == 1800
    assert timing.unless is not None
    plain = engine.rules[1].timing
    assert plain is not None and plain.describe() == "90s" and not plain.restart
    assert plain.max_late.total_seconds() == 3600  # the default


def test_a_misspelled_after_gets_a_suggestion_at_its_line(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        - name: ping
          on: {channel: online-chat}
          afer: 5m
          do: [{autoreply: {text: hi}}]
        """,
    )
    assert len(found) == 1
    assert "r.yaml:3" in found[0] and "did you mean 'after'?" in found[0]


@pytest.mark.parametrize(
    "key", ["unless: 'true'", "cancel_on: closed", "restart: true", "max_late: 5m"]
)
def test_the_companions_of_after_without_it_are_errors(tmp_path: Path, key: str) -> None:
    found = errors(
        tmp_path,
        f"""
        - name: ping
          on: {{channel: online-chat}}
          {key}
          do: [{{autoreply: {{text: hi}}}}]
        """,
    )
    name = key.split(":")[0]
    assert found == [
        f"{tmp_path / 'rules.d' / 'r.yaml'}:3: [0].{name}: `{name}` belongs to a "
        "timed rule: add `after:`"
    ] or (len(found) == 1 and "r.yaml:3" in found[0] and "add `after:`" in found[0])


def test_unknown_calendars_are_warnings_with_a_suggestion(tmp_path: Path) -> None:
    # warnings, like an unconfigured channel: the rules load with another config
    engine = load(
        tmp_path,
        """
        - name: ping
          on: {channel: online-chat}
          if: business_hours('suport')
          after: {business: 5m, calendar: suppot}
          do:
            - autoreply: {text: "open at {{ next_open('supprt') | datetime('%H:%M') }}"}
        """,
    )
    found = [str(w) for w in engine.ruleset.warnings if "calendar" in str(w)]
    assert len(found) == 3
    by_line = {error.split(": ", 1)[0].rsplit(":", 1)[1]: error for error in found}
    assert "unknown calendar 'suport' (did you mean 'support'?)" in by_line["3"]
    assert "unknown calendar 'suppot' (did you mean 'support'?)" in by_line["4"]
    assert "[0].after.calendar" in by_line["4"]
    assert "unknown calendar 'supprt' (did you mean 'support'?)" in by_line["6"]
    # when it runs, the condition fails with the same reason
    from scaffold import make_event

    plan = engine.evaluate(make_event(conversation={"id": "c1"}), explain=True)
    assert list(plan) == [] and plan.timers == []
    assert "unknown calendar 'suport'" in plan.rules[0].reason


def test_bad_durations_and_unknown_cancel_events(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        - name: ping
          on: {channel: online-chat}
          after: soon
          do: [{autoreply: {text: hi}}]
        """,
    )
    assert len(found) == 1 and "r.yaml:3" in found[0] and "not a duration" in found[0]
    engine = load(
        tmp_path,
        """
        - name: ping
          on: {channel: online-chat}
          after: 5m
          cancel_on: [agent_replid]
          do: [{autoreply: {text: hi}}]
        """,
    )
    (warning,) = [str(w) for w in engine.ruleset.warnings if "cancel_on" in str(w)]
    assert "unknown event 'agent_replid'" in warning and "did you mean 'agent_replied'?" in warning


def test_check_reports_them_and_schema_knows_the_keys(tmp_path: Path) -> None:
    write(
        tmp_path / "rules.d" / "r.yaml",
        """
        - name: ping
          on: {channel: online-chat}
          afer: 5m
          do: [{autoreply: {text: hi}}]
        """,
    )
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    runner = CliRunner()
    result = runner.invoke(cli, ["check", "--config", str(config), str(tmp_path / "rules.d")])
    assert result.exit_code == 1
    assert "r.yaml:3" in result.output and "did you mean 'after'?" in result.output
    assert "Traceback" not in result.output
    schema = json.loads(runner.invoke(cli, ["schema"]).output)
    rule = schema["$defs"]["rule"]["properties"]
    assert {"after", "unless", "cancel_on", "restart", "max_late"} <= set(rule)
    business = rule["after"]["oneOf"][1]
    assert business["required"] == ["business", "calendar"]


def test_a_rule_name_cannot_start_with_the_channel_timers_mark(tmp_path: Path) -> None:
    found = errors(
        tmp_path,
        """
        - name: "@telegram:close_after"
          on: {channel: online-chat, event: created}
          do: [{play_sound: {sound: bell}}]
        """,
    )
    assert len(found) == 1 and "r.yaml:1: [0].name" in found[0]
    assert "cannot start with '@' (channel timers use those)" in found[0]


def test_business_time_of_a_calendar_without_hours_is_a_warning(tmp_path: Path) -> None:
    """A calendar with no opening hours never opens: business time on it never passes, and
    each match was an error at run time only."""
    write(tmp_path / "rules.d" / "r.yaml", RULES_ON_CLOSED)
    config = write(tmp_path / "rulekit.yaml", CONFIG + "  closed:\n    hours: {}\n")
    engine = Engine.from_path(tmp_path / "rules.d", config)
    found = [str(w) for w in engine.ruleset.warnings if "opening hours" in str(w)]
    assert len(found) == 1 and "r.yaml:3: [0].after.calendar: calendar 'closed'" in found[0]
    assert "has no opening hours: its business time never passes" in found[0]


RULES_ON_CLOSED = """
- name: ping
  on: {channel: online-chat}
  after: {business: 5m, calendar: closed}
  do: [{autoreply: {text: hi}}]
- name: pong
  on: {channel: online-chat}
  after: {business: 5m, calendar: support}
  do: [{autoreply: {text: hi}}]
"""
