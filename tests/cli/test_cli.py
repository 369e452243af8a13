"""The command line: ``rulekit test``, ``check``, ``plugins``, ``schema``, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from scaffold import CHATRA_SAMPLES, EXAMPLES, REPO, write

from rulekit.cli.main import cli

CONFIG = str(EXAMPLES / "rulekit.yaml")
RULES = str(REPO / "rules.d")
TOKEN = "xoxb-VERY-DISTINCT-9d8c7b6a"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def refund(tmp_path: Path) -> Path:
    return write(
        tmp_path / "refund.yaml",
        """
        channel: online-chat
        event: message
        occurred_at: 2025-03-14T10:00:00Z
        conversation: {id: c1}
        client: {name: Bob}
        message: {text: I want a REFUND, author: client}
        """,
    )


# -- rulekit test ---------------------------------------------------------------------------


def test_text_output_for_people(refund: Path) -> None:
    result = run("test", "--rules", RULES, str(refund))
    assert result.exit_code == 0
    out = result.stdout
    assert "event message on online-chat from Bob" in out
    assert "message (client): I want a REFUND" in out
    assert "✓ Refund requests go to sales in Slack: conditions hold" in out
    assert "'refund' in message.text|lower  →  true" in out
    assert "'money back' in message.text|lower  →  not evaluated" in out
    assert "→ slack (Refund requests go to sales in Slack): post to Slack #support: " in out
    assert "*Refund request* from Bob: I want a REFUND" in out
    assert "would fail: Slack is not configured" in out
    # the rules file's own warning goes to stderr
    assert "Slack is not configured" in result.stderr


def test_json_output_is_one_object_of_the_documented_shape(refund: Path) -> None:
    result = run("test", "--rules", RULES, "--format", "json", str(refund), str(refund))
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert list(document) == ["results"]
    assert len(document["results"]) == 2
    for item in document["results"]:
        assert {"input", "error", "events"} <= set(item)
        assert item["error"] is None
        assert item["input"] == str(refund)
        (event,) = item["events"]
        assert {"event", "rules", "actions"} <= set(event)
        assert event["event"]["event"] == "message"
        assert "raw" not in event["event"]
        for trace in event["rules"]:
            assert set(trace) == {"name", "matched", "trace"}
        for action in event["actions"]:
            assert {"rule", "action", "params"} <= set(action)
        assert [a["action"] for a in event["actions"]] == ["slack"]
        assert event["actions"][0]["params"]["channel"] == "#support"


def test_secrets_never_reach_the_output(refund: Path) -> None:
    env = {"SLACK_BOT_TOKEN": TOKEN, "TELEGRAM_BOT_TOKEN": TOKEN, "CHATRA_SECRET_KEY": TOKEN}
    for output_format in ("text", "json"):
        result = run("test", "--config", CONFIG, "--format", output_format, str(refund), env=env)
        assert result.exit_code == 0
        assert "Refund requests go to sales in Slack" in result.output
        assert TOKEN not in result.output
    result = run("check", "--config", CONFIG, "--strict", env=env)
    assert TOKEN not in result.output
    result = run("plugins", "--format", "json", env=env)
    assert TOKEN not in result.output


def test_a_malformed_input_is_reported_and_the_others_still_run(
    tmp_path: Path, refund: Path
) -> None:
    broken = write(tmp_path / "broken.json", '{"channel": "online-chat", "event": ')
    wrong = write(
        tmp_path / "wrong.yaml", "channel: online-chat\nevent: created\norigin: martians\n"
    )
    result = run("test", "--rules", RULES, "--format", "json", str(broken), str(refund), str(wrong))
    assert result.exit_code == 2
    results = json.loads(result.stdout)["results"]
    assert [r["error"] is None for r in results] == [False, True, False]
    assert "invalid JSON" in results[0]["error"]
    assert "origin" in results[2]["error"]
    assert results[1]["events"][0]["actions"]
    assert "error: " in result.stderr


def test_raw_chatra_bodies_in_order_make_a_reopened_event() -> None:
    result = run(
        "test",
        "--config",
        CONFIG,
        "--format",
        "json",
        "--channel",
        "online-chat",
        str(EXAMPLES / "chatra" / "chat_reopened_1_transcript.json"),
        str(EXAMPLES / "chatra" / "chat_reopened_2_started.json"),
    )
    assert result.exit_code == 0
    first, second = json.loads(result.stdout)["results"]
    # the transcript holds an agent's answer from Chatra's own app: that agent took the chat
    # after it started, so the greeting's assign keeps their assignment and emits nothing
    assert [e["event"]["event"] for e in first["events"]] == [
        "created",
        "agent_replied",
        "closed",
    ]
    assert any(a["action"] == "assign" for a in first["events"][0]["actions"])
    assert [e["event"]["event"] for e in second["events"]] == ["reopened"]
    actions = second["events"][0]["actions"]
    telegram = next(a for a in actions if a["action"] == "telegram")
    assert telegram["params"]["parse_mode"] == "HTML"
    assert telegram["params"]["text"].startswith("<b>Tom Becker</b> reopened the chat:")
    assert telegram["would_fail"] == "the Telegram token is empty"
    autoreply = next(a for a in first["events"][0]["actions"] if a["action"] == "autoreply")
    assert "recovered" in autoreply["skipped"]


@pytest.mark.parametrize(
    ("sample", "reason"),
    [
        ("malformed_missing_client.json", "the body has no client object"),
        ("malformed_truncated_body.txt", "the body is not valid JSON"),
    ],
)
def test_malformed_raw_bodies_are_clear_errors(sample: str, reason: str) -> None:
    good = str(CHATRA_SAMPLES / "chat_started_anonymous.json")
    result = run(
        "test", "--config", CONFIG, "--channel", "online-chat", str(CHATRA_SAMPLES / sample), good
    )
    assert result.exit_code == 2
    assert reason in result.stdout
    assert f"error: {CHATRA_SAMPLES / sample}: {reason}" in result.stderr
    assert "Greet new chats" in result.stdout  # the good input still ran


def test_now_is_what_conditions_see(tmp_path: Path) -> None:
    rules = write(
        tmp_path / "rules" / "r.yaml",
        """
        - name: night shift
          on: {channel: online-chat}
          if: now.hour >= 22 or now.hour < 6
          do: [{autoreply: {text: "We are asleep (it is {{ now.strftime('%H:%M') }})"}}]
        """,
    )
    event = write(
        tmp_path / "e.yaml",
        "channel: online-chat\nevent: created\noccurred_at: 2025-03-14T12:00:00Z\n",
    )
    day = run("test", "--rules", str(rules), "--format", "json", str(event))
    assert json.loads(day.stdout)["results"][0]["events"][0]["actions"] == []
    night = run(
        "test",
        "--rules",
        str(rules),
        "--now",
        "2025-03-14T23:30:00",
        "--format",
        "json",
        str(event),
    )
    (action,) = json.loads(night.stdout)["results"][0]["events"][0]["actions"]
    assert action["params"]["text"] == "We are asleep (it is 23:30)"
    bad = run("test", "--rules", str(rules), "--now", "tonight", str(event))
    assert bad.exit_code == 2
    assert "'tonight' is not an ISO 8601 time" in bad.output


@pytest.mark.parametrize(
    "args",
    [
        ["test"],
        ["test", "--format", "xml", "x.json"],
        ["test", "--bogus", "x.json"],
        ["test", "--config", CONFIG, "--channel", "no-such-channel", "x.json"],
        ["check", "--strictly"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    result = run("test", "--rules", RULES, str(tmp_path / "missing.json"))
    assert result.exit_code == 2
    assert "cannot read" in result.output


# -- suites --------------------------------------------------------------------------------


def test_the_shipped_suite_passes() -> None:
    result = run("test", "--config", CONFIG, RULES)
    assert result.exit_code == 0, result.output
    assert "13 passed, 0 failed" in result.stdout


def test_a_failing_suite_exits_1_with_a_readable_diff(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    write(
        rules / "tests.yaml",
        """
        tests:
          - name: wrong expectations
            inputs:
              - event:
                  channel: online-chat
                  event: message
                  message: {text: refund!, author: client}
            expect:
              - rule: Refund requests go to sales in Slack
                action: slack
                params: {channel: "#sales"}
            expect_absent:
              - action: slack
        """,
    )
    result = run("test", "--config", CONFIG, "--rules", str(rules), str(rules))
    assert result.exit_code == 1
    out = result.stdout
    assert "✗ wrong expectations" in out
    assert (
        "expected an action: rule='Refund requests go to sales in Slack', action='slack', " in out
    )
    assert "params.channel='#sales'" in out
    assert (
        "expected no action matching action='slack', "
        "but rule 'Refund requests go to sales in Slack' planned slack" in out
    )
    assert "actual actions:" in out
    assert '+ slack (Refund requests go to sales in Slack): {"channel": "#support"' in out
    assert "6 passed, 1 failed" in out


# -- rulekit check ------------------------------------------------------------------------


def test_check_ok_and_strict() -> None:
    ok = run("check", RULES, "--config", CONFIG)
    assert ok.exit_code == 0
    # four rules without their token, five unset variables, and autoreply on two channels
    # without their credentials (Chatra's keys, the Telegram bot's token)
    assert "ok: 6 rules in 3 file(s), 2 test suite(s), 11 warning(s)" in ok.stdout
    assert "warning: " in ok.stderr
    assert "${CHATRA_SECRET_KEY} is unset or empty" in ok.stderr
    strict = run("check", RULES, "--config", CONFIG, "--strict")
    assert strict.exit_code == 1
    assert "error: " in strict.stderr and "the Slack token is empty" in strict.stderr
    env = {"SLACK_BOT_TOKEN": "x", "TELEGRAM_BOT_TOKEN": "y"}
    assert (
        "needs public_key and secret_key"
        in run("check", RULES, "--config", CONFIG, "--strict", env=env).stderr
    )
    env |= {"CHATRA_PUBLIC_KEY": "p", "CHATRA_SECRET_KEY": "s"}
    assert run("check", RULES, "--config", CONFIG, "--strict", env=env).exit_code == 0


def test_check_lists_every_error(tmp_path: Path) -> None:
    write(
        tmp_path / "rules" / "a.yaml",
        "- name: a\n  on: {channel: online-chat}\n  do: [{slak: {}}]\n",
    )
    write(
        tmp_path / "rules" / "b.yaml",
        "- name: b\n  on: {channel: online-chat}\n  if: clent\n  do: [{autoreply: {}}]\n",
    )
    result = run("check", str(tmp_path / "rules"))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 3
    assert "a.yaml:3: [0].do[0].slak: unknown action 'slak' (did you mean 'slack'?)" in lines[0]
    assert "b.yaml:3: [0].if: unknown name 'clent' (did you mean 'client'?)" in lines[1]
    assert "b.yaml:4: [0].do[0].autoreply.text: missing required field 'text'" in lines[2]
    assert "3 error(s)" in result.stderr


def test_check_reports_config_errors(tmp_path: Path) -> None:
    config = write(tmp_path / "rulekit.yaml", "timezone: Mars/Olympus\nrulez: x\n")
    result = run("check", RULES, "--config", str(config))
    assert result.exit_code == 1
    assert "rulekit.yaml:1: timezone: unknown timezone 'Mars/Olympus'" in result.stderr
    assert "rulekit.yaml:2: rulez: unknown field 'rulez' (did you mean 'rules'?)" in result.stderr


def test_config_from_the_environment(tmp_path: Path) -> None:
    config = write(tmp_path / "rulekit.yaml", f"rules: {RULES}\ntimezone: Europe/Berlin\n")
    result = run("check", env={"RULEKIT_CONFIG": str(config)})
    assert result.exit_code == 0
    assert "ok: 6 rules" in result.stdout


# -- rulekit schema -----------------------------------------------------------------------


def test_schema_lists_every_action_and_accepts_the_examples() -> None:
    from rulekit import yamlsource
    from rulekit.plugins import load_plugins

    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    defs = schema["$defs"]
    plugins = load_plugins()
    for name in plugins.actions.names():
        params = defs[f"params_{name}"]
        assert set(params["properties"]) == set(plugins.actions[name].Params.model_fields)
    assert defs["params_telegram"]["properties"]["parse_mode"]["enum"] == [
        "none",
        "HTML",
        "MarkdownV2",
    ]
    assert defs["rule"]["required"] == ["name", "on", "do"]

    for file in sorted(Path(RULES).glob("[0-9]*.yaml")):
        for rule in yamlsource.load(file.read_bytes()):
            _conforms(rule, defs["rule"], defs)


def _conforms(rule: dict, rule_schema: dict, defs: dict) -> None:
    """The parts of the schema a rule must satisfy (jsonschema is not a dependency)."""
    assert set(rule) <= set(rule_schema["properties"])
    assert set(rule_schema["required"]) <= set(rule)
    for step in rule["do"]:
        ((action, params),) = step.items()
        params_schema = defs[f"params_{action}"]
        assert set(params) <= set(params_schema["properties"])
        assert set(params_schema.get("required", [])) <= set(params)


# -- the installed console script ---------------------------------------------------------


@pytest.mark.slow
def test_console_script_reports_user_errors_without_traceback(tmp_path: Path) -> None:
    script = shutil.which("rulekit", path=str(Path(sys.executable).parent))
    assert script is not None
    write(
        tmp_path / "rules" / "a.yaml",
        "- name: a\n  on: {channel: online-chat}\n  do: [{slak: {}}]\n",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RULEKIT_")}
    cases = [
        ([script, "check", str(tmp_path / "rules")], 1),
        (
            [
                script,
                "test",
                "--channel",
                "online-chat",
                str(CHATRA_SAMPLES / "malformed_truncated_body.txt"),
            ],
            2,
        ),
        ([script, "test", "--config", str(tmp_path / "missing.yaml"), "x.json"], 1),
    ]
    for command, code in cases:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60
        )
        assert done.returncode == code, (command, done.stderr)
        assert "Traceback" not in done.stderr
        assert "error: " in done.stderr


def test_schema_offers_test_suites_beside_rules() -> None:
    """Suites live beside rules: the schema accepts both (the keys of every shipped suite are
    the schema's, ``online`` and ``would_fail`` included), and says what ``team`` is."""
    from rulekit import yamlsource

    schema = json.loads(run("schema").stdout)
    defs = schema["$defs"]
    assert {"$ref": "#/$defs/suite"} in schema["oneOf"]
    assert defs["suite"]["required"] == ["tests"]
    test_keys = set(defs["SuiteTest"]["properties"])
    expect_keys = set(defs["Expectation"]["properties"])
    assert {"online", "expect", "expect_absent", "exact", "now"} <= test_keys
    assert "would_fail" in expect_keys
    assert "team" in defs["condition"]["oneOf"][0]["description"]
    suites = sorted(Path(RULES).glob("*tests.yaml"))
    assert len(suites) == 2
    for file in suites:
        for test in yamlsource.load(file.read_bytes())["tests"]:
            assert set(test) <= test_keys, file
            for item in [*test.get("expect", []), *test.get("expect_absent", [])]:
                assert set(item) <= expect_keys, file


def test_an_event_over_its_cpu_budget_is_stopped_and_the_run_goes_on(tmp_path: Path) -> None:
    """Each rule's template has its own budget; the event as a whole has the daemon's
    ``processing.event_cpu``, in the dry run too: 30 rules each spending theirs took 30 times
    as long, where the daemon sets the event aside."""
    loop = "{% for i in range(10000) %}{% for j in range(10) %}{% endfor %}{% endfor %}"
    busy = "".join(
        f"- name: busy {i}\n  on: {{channel: online-chat, event: created}}\n"
        f"  do: [{{autoreply: {{text: {json.dumps(loop)}}}}}]\n"
        for i in range(30)
    )
    quick = "- name: quick\n  on: {channel: online-chat, event: message}\n"
    rules = write(tmp_path / "rules" / "r.yaml", busy + quick + "  do: [{autoreply: {text: hi}}]\n")
    config = write(
        tmp_path / "rulekit.yaml",
        "channels: {online-chat: {provider: chatra}}\nprocessing: {event_cpu: 0.3}\n",
    )
    created = write(tmp_path / "1.yaml", "channel: online-chat\nevent: created\n")
    message = write(tmp_path / "2.yaml", "channel: online-chat\nevent: message\n")
    result = run(
        "test", "--config", str(config), "--rules", str(rules), "--format", "json",
        str(created), str(message),
    )  # fmt: skip
    first, second = (r["events"][0] for r in json.loads(result.stdout)["results"])
    assert first["actions"] == []
    [error] = first["errors"]
    assert error.startswith("evaluating event online-chat:created:"), error
    assert error.endswith(
        "took more than its CPU budget (0.3 s; processing.event_cpu): the daemon would set the "
        "input aside, with all its events"
    )
    assert [action["params"]["text"] for action in second["actions"]] == ["hi"]


@pytest.mark.parametrize(
    ("processing", "budget"),
    [
        ("{event_cpu: 0.3}", "(0.3 s; processing.event_cpu)"),
        (
            "{event_cpu: 60, webhook_cpu: 0.3}",
            "(0.3 s for the events of its input together; processing.webhook_cpu)",
        ),
    ],
)
def test_an_input_over_its_cpu_budget_is_set_aside_whole(
    tmp_path: Path, processing: str, budget: str
) -> None:
    """The daemon sets aside the whole inbox item when one of its events goes past its
    budget, or its events together past ``processing.webhook_cpu``: nothing of it is
    recorded. The dry run planned the item's other events as if they ran, and kept what its
    events changed for the next input."""
    loop = "{% for i in range(10000) %}{% for j in range(10) %}{% endfor %}{% endfor %}"
    busy = "".join(
        f"- name: busy {i}\n  on: {{channel: online-chat, event: created}}\n"
        f"  if: conversation.id == 'slow'\n"
        f"  do: [{{autoreply: {{text: {json.dumps(loop)}}}}}]\n"
        for i in range(30)
    )
    quick = (
        "- name: quick\n  on: {channel: online-chat, event: [created, message]}\n"
        "  cooldown: 1h\n  do: [{autoreply: {text: hi}}]\n"
    )
    rules = write(tmp_path / "rules" / "r.yaml", quick + busy)
    config = write(
        tmp_path / "rulekit.yaml",
        f"channels: {{online-chat: {{provider: chatra}}}}\nprocessing: {processing}\n",
    )
    both = write(
        tmp_path / "1.yaml",
        "- {channel: online-chat, event: created, conversation: {id: slow}}\n"
        "- {channel: online-chat, event: message, conversation: {id: quick}}\n",
    )
    again = write(
        tmp_path / "2.yaml", "{channel: online-chat, event: message, conversation: {id: quick}}\n"
    )
    result = run(
        "test", "--config", str(config), "--rules", str(rules), "--format", "json",
        str(both), str(again),
    )  # fmt: skip
    first, second = (r["events"] for r in json.loads(result.stdout)["results"])
    assert [(e["event"]["event"], e["actions"]) for e in first] == [
        ("created", []),
        ("message", []),
    ]
    for event in first:
        [error] = event["errors"]
        assert error.startswith("evaluating event online-chat:created:"), error
        assert error.endswith(f"took more than its CPU budget {budget}: the daemon would set the "
                              "input aside, with all its events")  # fmt: skip
    # the quick conversation's cooldown was never set: the set-aside input left nothing
    [(text)] = [a["params"]["text"] for e in second for a in e["actions"]]
    assert text == "hi"
