"""``team`` in conditions and templates: who is online (everyone before presence is tracked),
per group, open counts; load-time checks; what the trace keeps; the sandbox's limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from rulekit.cli.main import cli
from rulekit.engine.trace import trace_of
from rulekit.errors import ValidationErrors
from rulekit.event import Event
from rulekit.team import TeamFacts

CONFIG = """\
channels:
  online-chat: {provider: webhook}
  shop-chat: {provider: webhook}
groups: [support, sales]
agents:
  - {email: Anna@shop.example.com, groups: [support], channels: [online-chat]}
  - {email: lena@shop.example.com, groups: [support, sales], channels: [online-chat]}
  - {email: otto@shop.example.com, groups: [support], channels: [shop-chat]}
"""

RULES = """\
- name: Who
  on: {channel: online-chat}
  do:
    - set:
        fields:
          online: "{{ team.online|join(',') }}"
          sales: "{{ team.online_in('sales')|join(',') }}"
          tracked: "{{ team.tracked }}"
"""


def created(**conversation: object) -> Event:
    return Event(
        channel="online-chat",
        event="created",
        occurred_at=datetime(2026, 3, 2, 10, tzinfo=UTC),
        conversation={"id": "c1", **conversation},
    )


def body(plan) -> dict:
    [action] = plan.actions
    return action.params["fields"]


def test_before_presence_is_tracked_everyone_with_access_is_online(build_engine) -> None:
    engine = build_engine(RULES, CONFIG)
    assert engine.reads_team
    plan = engine.evaluate(created())  # no facts: as a new install, nobody ever signed in
    assert body(plan) == {
        "online": "anna@shop.example.com,lena@shop.example.com",  # not Otto: no access
        "sales": "lena@shop.example.com",
        "tracked": "False",
    }
    facts = TeamFacts.of({}, {})  # what an empty presence table reads as
    assert facts.presence is None
    assert body(engine.evaluate(created(), team=facts))["tracked"] == "False"


def test_tracked_presence_counts_online_agents_only(build_engine) -> None:
    engine = build_engine(RULES, CONFIG)
    facts = TeamFacts.of({"anna@shop.example.com": "online", "lena@shop.example.com": "away"}, {})
    plan = engine.evaluate(created(), team=facts)
    assert body(plan) == {"online": "anna@shop.example.com", "sales": "", "tracked": "True"}
    # what the rules read is what the trace keeps
    assert plan.team == {
        "tracked": True,
        "online": ["anna@shop.example.com"],
        "online_in": {"sales": []},
    }
    assert trace_of(plan)["team"] == plan.team


def test_open_counts_any_case_and_nobody(build_engine) -> None:
    engine = build_engine(
        "- name: Busy\n  on: {channel: online-chat}\n"
        "  if: team.open_count(conversation.assignee) >= 2\n"
        "  do: [{tag: {add: [busy]}}]\n",
        CONFIG,
    )
    facts = TeamFacts.of({}, {"anna@shop.example.com": 2})
    busy = engine.evaluate(created(assignee="ANNA@shop.example.com"), team=facts, explain=True)
    assert [a.action for a in busy] == ["tag"]
    assert busy.team == {"tracked": False, "open": {"anna@shop.example.com": 2}}
    nobody = engine.evaluate(created(), team=facts, explain=True)
    assert list(nobody) == [] and nobody.team is None  # nobody assigned: nothing to count


def test_rules_that_do_not_read_the_team_cost_nothing(build_engine) -> None:
    rules = "- name: X\n  on: {channel: online-chat}\n  do: [{tag: {add: [a]}}]\n"
    engine = build_engine(rules, CONFIG)
    assert not engine.reads_team
    plan = engine.evaluate(created(), team=TeamFacts.of({"x@y.z": "online"}, {}))
    assert plan.team is None and "team" not in trace_of(plan)


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("team.onlin", "team has no field 'onlin' (did you mean 'online'?)"),
        ("team.online_in('suport')", "unknown group 'suport' (did you mean 'support'?)"),
        ("team.online_in()", "team.online_in() takes one argument, a group's name"),
        ("team.seen", "team has no field 'seen'"),
        ("team._facts", "attribute '_facts' is not accessible (sandbox)"),
    ],
)
def test_mistakes_are_load_errors_with_file_and_line(build_engine, condition, problem) -> None:
    rules = (
        f'- name: X\n  on: {{channel: online-chat}}\n  if: "{condition}"\n'
        "  do: [{tag: {add: [a]}}]\n"
    )
    with pytest.raises(ValidationErrors) as raised:
        build_engine(rules, CONFIG)
    [error] = raised.value.errors
    assert problem in str(error)
    assert error.location.line == 3


def test_a_group_named_by_a_value_is_checked_when_the_rule_runs(build_engine) -> None:
    engine = build_engine(
        "- name: X\n  on: {channel: online-chat}\n"
        "  if: team.online_in(conversation.group)\n  do: [{tag: {add: [a]}}]\n",
        CONFIG,
    )
    plan = engine.evaluate(created(group="sals"), explain=True)
    assert list(plan) == []
    assert "unknown group 'sals' (did you mean 'sales'?)" in plan.rules[0].reason
    assert [a.action for a in engine.evaluate(created(group="sales"))] == ["tag"]


def test_the_sandbox_shows_nothing_else_of_the_team(build_engine) -> None:
    engine = build_engine(
        "- name: X\n  on: {channel: online-chat}\n  do:\n"
        "    - tag: {add: [\"{{ team['_facts'] }}\"]}\n"
        '    - tag: {add: ["{% for a in team.online %}{{ a|lower }}{% endfor %}"]}\n',
        CONFIG,
    )
    plan = engine.evaluate(created())
    assert "is not accessible" in plan.errors[0] or "no attribute '_facts'" in plan.errors[0]
    assert [a.params["add"] for a in plan] == [["anna@shop.example.comlena@shop.example.com"]]


def test_the_index_and_timers_read_the_team_too(build_engine) -> None:
    engine = build_engine(
        "- name: Anna online\n  on: {channel: online-chat}\n"
        "  if: \"'anna@shop.example.com' in team.online\"\n  do: [{tag: {add: [a]}}]\n"
        "- name: Later\n  on: {channel: online-chat, event: created}\n  after: 5m\n"
        "  unless: team.online\n  do: [{tag: {add: [nobody]}}]\n",
        CONFIG,
    )
    away = TeamFacts.of({"anna@shop.example.com": "away"}, {})
    plan = engine.evaluate(created(), team=away, explain=True, excluded=True)
    assert list(plan) == [] and len(plan.timers) == 1
    assert [a.action for a in engine.evaluate(created(), team=TeamFacts())] == ["tag"]
    event = created()
    due = event.occurred_at + timedelta(minutes=5)
    fired = engine.fire("Later", event, due, due, team=away)
    assert [a.params["add"] for a in fired] == [["nobody"]] and fired.team == {
        "tracked": True,
        "online": [],
    }
    held = engine.fire("Later", event, due, due, team=TeamFacts())
    assert list(held) == [] and held.firing is not None and held.firing.outcome == "unless"


def test_rulekit_test_online_option(tmp_path) -> None:
    (tmp_path / "rulekit.yaml").write_text(CONFIG)
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES)
    event = tmp_path / "e.json"
    event.write_text('{"channel": "online-chat", "event": "created", "conversation": {"id": "c"}}')
    base = ["test", "--config", str(tmp_path / "rulekit.yaml"), "--rules", str(rules)]
    runner = CliRunner()
    nobody = runner.invoke(cli, [*base, "--online", "", "--format", "json", str(event)])
    assert nobody.exit_code == 0, nobody.output
    import json

    found, *_emitted = json.loads(nobody.stdout)["results"][0]["events"]  # (then `updated`)
    assert found["team"] == {"tracked": True, "online": [], "online_in": {"sales": []}}
    lena = runner.invoke(cli, [*base, "--online", " LENA@shop.example.com ,", str(event)])
    assert "team: online: lena@shop.example.com" in lena.output
    assert "team: online in sales: lena@shop.example.com" in lena.output
    everyone = runner.invoke(cli, [*base, str(event)])
    assert "team: presence not tracked: everyone with access counts as online" in everyone.output
    wrong = runner.invoke(cli, [*base, "--online", "lena", str(event)])
    assert wrong.exit_code == 2 and "'lena' is not an email address" in wrong.output


def test_what_the_trace_kept_evaluates_the_same_again(build_engine) -> None:
    """``why --excluded`` and ``replay`` evaluate a recorded event again with the team its
    trace kept."""
    engine = build_engine(RULES, CONFIG)
    facts = TeamFacts.of(
        {"anna@shop.example.com": "away", "lena@shop.example.com": "online"}, {"x@y.z": 4}
    )
    first = engine.evaluate(created(), team=facts)
    again = engine.evaluate(created(), team=TeamFacts.recorded(first.team))
    assert (
        body(again)
        == body(first)
        == {
            "online": "lena@shop.example.com",
            "sales": "lena@shop.example.com",
            "tracked": "True",
        }
    )
    assert again.team == first.team
    untracked = engine.evaluate(created())
    assert TeamFacts.recorded(untracked.team) == TeamFacts()
    assert TeamFacts.recorded(None) is None and TeamFacts.recorded({}) is None


def test_check_warns_when_presence_can_never_be_tracked(tmp_path) -> None:
    (tmp_path / "rulekit.yaml").write_text(CONFIG)
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "r.yaml").write_text(RULES)
    check = ["check", str(rules), "--config", str(tmp_path / "rulekit.yaml")]
    result = CliRunner().invoke(cli, check)
    assert result.exit_code == 0, result.output
    assert (
        "r.yaml:6: [0].do[0].set.fields.online: rules read team, but no agent can sign in to the "
        "console (token_sha256): presence is never tracked, and every agent with access counts "
        "as online"
    ) in result.output
    assert CliRunner().invoke(cli, [*check, "--strict"]).exit_code == 1
    (tmp_path / "rulekit.yaml").write_text(
        CONFIG.replace("channels: [shop-chat]}", "channels: [shop-chat], token_sha256: abc}")
    )
    assert "rules read team" not in CliRunner().invoke(cli, check).output
