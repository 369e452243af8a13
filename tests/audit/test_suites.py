"""Rule test suites: inputs in order against one state, expectations on the plan."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from scaffold import EXAMPLES, REPO, write

from rulekit.audit.suites import report, run_suite
from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.event import MAX_OWN_CHAIN, MAX_OWN_EVENTS

CONFIG = EXAMPLES / "rulekit.yaml"


def engine() -> Engine:
    return Engine.from_path(REPO / "rules.d", CONFIG)


def suite(tmp_path: Path, text: str) -> Path:
    return write(tmp_path / "suite.yaml", text)


def test_inputs_of_every_kind_and_expectations(tmp_path: Path) -> None:
    samples = EXAMPLES / "chatra"
    path = suite(
        tmp_path,
        f"""
        tests:
          - name: file inputs share one state
            channel: online-chat
            inputs:
              - file: {samples / "chat_reopened_1_transcript.json"}
              - file: {samples / "chat_reopened_2_started.json"}
            expect:
              - {{rule: Telegram when a client reopens a chat, action: telegram}}
              - {{action: play_sound, params: {{sound: chime}}}}
          - name: a normalized event inline
            inputs:
              - event: {{channel: online-chat, event: message, message: {{text: money back!}}}}
            expect:
              - {{action: slack, params: {{channel: "#support"}}}}
            exact: true
          - name: an inline raw payload
            channel: online-chat
            inputs:
              - payload:
                  eventName: chatStarted
                  client: {{id: c-77, chatId: ch-77}}
                  message: {{id: m1, type: client, text: hello, createdAt: 1741943525000}}
            expect:
              - {{rule: Greet new chats, action: autoreply}}
        """,
    )
    result = run_suite(engine(), path)
    assert result.error is None
    assert [(t.name, t.failures) for t in result.tests] == [
        ("file inputs share one state", []),
        ("a normalized event inline", []),
        ("an inline raw payload", []),
    ]
    text, passed, failed = report([result])
    assert (passed, failed) == (3, 0)
    assert "3 passed, 0 failed" in text


def test_each_test_starts_with_a_fresh_state(tmp_path: Path) -> None:
    second = EXAMPLES / "chatra" / "chat_reopened_2_started.json"
    path = suite(
        tmp_path,
        f"""
        tests:
          - name: without the transcript before it, the chat is new
            channel: online-chat
            inputs: [{{file: {second}}}]
            expect_absent: [{{action: telegram}}]
            expect: [{{rule: Greet new chats, action: autoreply}}]
        """,
    )
    assert run_suite(engine(), path).passed


def test_failures_are_listed(tmp_path: Path) -> None:
    path = suite(
        tmp_path,
        """
        tests:
          - name: strict
            inputs:
              - event: {channel: online-chat, event: message, message: {text: refund}}
            expect:
              - {action: telegram}
            exact: true
        """,
    )
    result = run_suite(engine(), path)
    assert not result.passed
    failures = result.tests[0].failures
    assert failures == [
        "expected an action: action='telegram'",
        "unexpected action: slack by 'Refund requests go to sales in Slack'",
    ]
    text, passed, failed = report([result])
    assert (passed, failed) == (0, 1)
    assert "       - expected an action: action='telegram'" in text


def test_a_broken_suite_is_an_error_with_a_location(tmp_path: Path) -> None:
    path = suite(tmp_path, "tests:\n  - name: x\n    inputs: []\n    expekt: []\n")
    result = run_suite(engine(), path)
    assert not result.passed
    assert result.error is not None
    assert f"{path}:" in result.error


def test_a_bad_input_fails_its_test_only(tmp_path: Path) -> None:
    path = suite(
        tmp_path,
        """
        tests:
          - name: bad
            inputs: [{file: missing.json}]
            exact: true
          - name: good
            inputs: [{event: {channel: online-chat, event: closed}}]
            exact: true
        """,
    )
    result = run_suite(engine(), path)
    assert [t.passed for t in result.tests] == [False, True]
    assert "input 1:" in result.tests[0].failures[0]
    assert "cannot read" in result.tests[0].failures[0]


def test_an_expectation_on_a_rule_or_action_that_does_not_exist_fails_with_its_line(
    tmp_path: Path,
) -> None:
    # expect_absent on a misspelt name can never match: the test would pass checking nothing
    path = suite(
        tmp_path,
        """
        tests:
          - name: misspelt
            inputs:
              - event: {channel: online-chat, event: reopened, message: {text: hi}}
            expect_absent:
              - {rule: Telegram when a client reopened a chat}
              - {action: telegram_message}
          - name: right
            inputs:
              - event: {channel: online-chat, event: reopened, message: {text: hi}}
            expect: [{rule: Telegram when a client reopens a chat, action: telegram}]
        """,
    )
    result = run_suite(engine(), path)
    assert [t.passed for t in result.tests] == [False, True]
    assert result.tests[0].failures == [
        f"{path}:6: tests[0].expect_absent[0].rule: no rule is named "
        "'Telegram when a client reopened a chat' "
        "(did you mean 'Telegram when a client reopens a chat'?)",
        f"{path}:7: tests[0].expect_absent[1].action: no action is named "
        "'telegram_message' (did you mean 'telegram'?)",
    ]


def test_a_suite_or_a_test_that_checks_nothing_is_an_error(tmp_path: Path) -> None:
    empty = run_suite(engine(), suite(tmp_path, "tests: []\n"))
    assert not empty.passed
    assert empty.error is not None and "no tests" in empty.error
    path = suite(
        tmp_path,
        """
        tests:
          - name: checks nothing
            inputs: [{event: {channel: online-chat, event: closed}}]
            expect: []
        """,
    )
    result = run_suite(engine(), path)
    assert not result.passed
    assert result.error == (
        f"{path}:2: tests[0]: the test checks nothing: give it expect, expect_absent or "
        "exact: true (exact with no expect: no action at all)"
    )


STATE_CONFIG = """
channels:
  online-chat: {provider: chatra, public_key: p, secret_key: s, webhook_secret: w,
                default_group: support, default_agent_id: agent1}
groups: [support]
tags: [vip]
agents:
  - {email: anna@shop.example, groups: [support], channels: [online-chat]}
  - {email: boris@shop.example, groups: [support], channels: [online-chat]}
"""

STATE_RULES = """
- name: Tag and assign
  on: {channel: online-chat, event: created}
  do:
    - tag: {add: [vip]}
    - assign: {group: support, only_online: true}
- name: Tagged
  on: {channel: online-chat, event: message}
  if: "'vip' in conversation.tags"
  do:
    - play_sound: {sound: "bell-{{ conversation.assignee }}"}
- name: Assigned
  on: {channel: online-chat, event: assigned}
  allow_own_events: true
  do:
    - play_sound: {sound: "to-{{ conversation.assignee }}"}
"""


def test_actions_change_the_simulated_state_and_their_events_are_planned(tmp_path: Path) -> None:
    """As in the daemon: the tag and the assign of one input are made before the next input
    (which sees them), the `assigned` event the assign emits is planned, and the assign picks
    among who the test has online."""
    config = write(tmp_path / "rulekit.yaml", STATE_CONFIG)
    rules = write(tmp_path / "rules" / "rules.yaml", STATE_RULES)
    samples = EXAMPLES / "chatra"
    path = suite(
        tmp_path,
        f"""
        tests:
          - name: the second message sees the first one's tag and assignee
            channel: online-chat
            online: [boris@shop.example]
            inputs:
              - file: {samples / "chat_started_anonymous.json"}
              - file: {samples / "chat_fragment_client_message.json"}
            expect:
              - {{rule: Assigned, params: {{sound: to-boris@shop.example}}}}
              - {{rule: Tagged, params: {{sound: bell-boris@shop.example}}}}
        """,
    )
    result = run_suite(Engine.from_path(rules.parent, config), path)
    assert [t.failures for t in result.tests] == [[]]


def test_a_failing_test_lists_which_planned_actions_would_fail(tmp_path: Path) -> None:
    """A CI log of a failing suite lists the actions that were planned; it now says which of
    them the daemon would dead-letter (and ``--format json`` carries them too)."""
    samples = EXAMPLES / "chatra"
    path = suite(
        tmp_path,
        f"""
        tests:
          - name: reopened
            channel: online-chat
            inputs:
              - file: {samples / "chat_reopened_1_transcript.json"}
              - file: {samples / "chat_reopened_2_started.json"}
            expect: [{{action: slack}}]
        """,
    )
    result = run_suite(engine(), path)
    text, _, failed = report([result])
    assert failed == 1
    lines = text.splitlines()
    telegram = next(i for i, line in enumerate(lines) if line.startswith("       + telegram ("))
    assert lines[telegram + 1] == "         would fail: the Telegram token is empty"
    output = CliRunner().invoke(
        cli, ["test", "--config", str(CONFIG), "--rules", str(REPO / "rules.d"),
              "--format", "json", str(path)],
    )  # fmt: skip
    assert output.exit_code == 1
    [test] = json.loads(output.stdout)["suites"][0]["tests"]
    [sent] = [a for a in test["actual"] if a["action"] == "telegram"]
    assert sent["would_fail"] == "the Telegram token is empty"
    assert sent["rule"] == "Telegram when a client reopens a chat"


def test_a_client_update_is_seen_by_the_next_input(tmp_path: Path) -> None:
    """As in the daemon, ``update_client`` writes rulekit's own record of the client before it
    calls the service: the next webhook of the client (which does not carry the email) reads
    it from there."""
    config = write(tmp_path / "rulekit.yaml", STATE_CONFIG)
    rules = write(
        tmp_path / "rules" / "rules.yaml",
        """
        - name: Note the email
          on: {channel: online-chat, event: created}
          do: [{update_client: {email: visitor@example.org}}]
        - name: Read it
          on: {channel: online-chat, event: message}
          do: [{play_sound: {sound: "{{ 'bell' if client.email else 'chime' }}"}}]
        """,
    )
    samples = EXAMPLES / "chatra"
    path = suite(
        tmp_path,
        f"""
        tests:
          - name: the message sees the email
            channel: online-chat
            inputs:
              - file: {samples / "chat_started_anonymous.json"}
              - file: {samples / "chat_fragment_client_message.json"}
            expect: [{{rule: Read it, params: {{sound: bell}}}}]
        """,
    )
    result = run_suite(Engine.from_path(rules.parent, config), path)
    assert [t.failures for t in result.tests] == [[]]


def test_actions_whose_events_never_end_stop_the_simulation_with_an_error(tmp_path: Path) -> None:
    """Two rules that undo each other's change on every ``updated`` would keep the daemon
    busy for ever; the chain ends where the daemon ends it (MAX_OWN_CHAIN events), with a
    plan error that says so, long before the simulation's own bound (MAX_OWN_EVENTS)."""
    config = write(tmp_path / "rulekit.yaml", STATE_CONFIG)
    rules = write(
        tmp_path / "rules" / "rules.yaml",
        """
        - name: Add
          on: {channel: online-chat, event: [created, updated]}
          allow_own_events: true
          if: "'vip' not in conversation.tags"
          do: [{tag: {add: [vip]}}]
        - name: Remove
          on: {channel: online-chat, event: updated}
          allow_own_events: true
          if: "'vip' in conversation.tags"
          do: [{tag: {remove: [vip]}}]
        """,
    )
    path = suite(
        tmp_path,
        f"""
        tests:
          - name: a loop
            channel: online-chat
            inputs: [{{file: {EXAMPLES / "chatra" / "chat_started_anonymous.json"}}}]
            expect: [{{rule: Add}}]
        """,
    )
    [test] = run_suite(Engine.from_path(rules.parent, config), path).tests
    assert test.failures
    for failure in test.failures:
        assert failure.startswith("plan error: event "), failure
        assert f"ends a chain of {MAX_OWN_CHAIN} events rulekit's own actions caused" in failure
    assert MAX_OWN_CHAIN <= len(test.actual) < MAX_OWN_EVENTS  # (each emitted event its tag)
