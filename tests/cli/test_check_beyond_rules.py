"""``rulekit check`` validates what beside the rules would fail as surely as a rule that does
not load: the test suites beside them (a suite ``rulekit test`` could not run, or that could
never fail, is an error with its file and line, every problem at once) and the config's storage
URL (one ``rulekit run`` cannot open); the exit code is 1."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from scaffold import write

from rulekit.cli.main import cli

RULES = """\
- name: Greet
  on: {event: created}
  do: [{tag: {add: [new]}}]
"""


def check(tmp_path: Path, suite: str) -> tuple[int, str]:
    write(tmp_path / "rules.d" / "10-rules.yaml", RULES)
    write(tmp_path / "rules.d" / "tests.yaml", suite)
    result = CliRunner().invoke(cli, ["check", str(tmp_path / "rules.d")])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("suite", "errors"),
    [
        (
            "tests:\n  - name: t\n    inputs: []\n    expect: [{action: tag}]\n    bogus: 1\n",
            [
                "tests.yaml:3: tests[0].inputs: List should have at least 1 item",
                "tests.yaml:5: tests[0].bogus: unknown field 'bogus'",
            ],
        ),
        (
            "tests:\n  - name: t\n    inputs: [{file: missing.json}]\n"
            "    expect_absent: [{rule: Gret, action: slak}]\n",
            [
                "tests.yaml:4: tests[0].expect_absent[0].rule: no rule is named 'Gret'"
                " (did you mean 'Greet'?)",
                "tests.yaml:4: tests[0].expect_absent[0].action: no action is named 'slak'",
                "tests.yaml:3: tests[0].inputs[0].file: no such file 'missing.json'",
            ],
        ),
        ("tests: []\n", ["tests.yaml: the suite has no tests"]),
        ("tests:\n  - {name: t, inputs: [{advance: 5m}]}\n", ["tests.yaml:2: tests[0]: "]),
    ],
)
def test_a_broken_suite_fails_check_with_every_problem_located(
    tmp_path: Path, suite: str, errors: list[str]
) -> None:
    code, output = check(tmp_path, suite)
    assert code == 1, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == len(errors), output
    for line, expected in zip(lines, errors, strict=True):
        assert expected in line, output
    assert "ok:" not in output


def test_a_sound_suite_passes_check(tmp_path: Path) -> None:
    write(tmp_path / "rules.d" / "event.json", '{"channel": "online-chat", "event": "created"}')
    code, output = check(
        tmp_path,
        "tests:\n  - name: t\n    inputs: [{file: event.json}, {advance: 5m}]\n"
        "    expect: [{rule: Greet, action: tag, params: {add: [new]}}]\n",
    )
    assert code == 0, output
    assert "1 rules in 1 file(s), 1 test suite(s)" in output


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ("mysql://db.example/rulekit", "unknown scheme 'mysql'"),
        ("sqlite://rulekit.sqlite3", "a SQLite URL has no host"),
        ("sqlite:///rulekit.sqlite3?synchronus=normal", "unknown option 'synchronus'"),
        ("sqlite:///rulekit.sqlite3?synchronous=fast", "synchronous must be one of"),
        ("sqlite:///rulekit.sqlite3?busy_timeout=5s", "busy_timeout must be seconds"),
        ("sqlite:///rulekit.sqlite3?busy_timeout=-1", "busy_timeout must be seconds"),
        ("sqlite:///rulekit.sqlite3?busy_timeout=nan", "busy_timeout must be seconds"),
        ("memory://x", "write just 'memory://'"),
    ],
)
def test_a_storage_url_no_store_can_open_fails_check(
    tmp_path: Path, storage: str, message: str
) -> None:
    """``rulekit run`` stops at once on such a URL: ``check`` (strict or not) says so first,
    without opening the store."""
    write(tmp_path / "rules.d" / "10-rules.yaml", RULES)
    config = write(tmp_path / "rulekit.yaml", f"rules: rules.d\nstorage: '{storage}'\n")
    for strict in ([], ["--strict"]):
        result = CliRunner().invoke(cli, ["check", "--config", str(config), *strict])
        assert result.exit_code == 1, result.output
        assert "rulekit.yaml: storage: storage URL" in result.output
        assert message in result.output
    assert not (tmp_path / "rulekit.sqlite3").exists()


def test_a_sound_storage_url_passes_check_without_opening_the_store(tmp_path: Path) -> None:
    write(tmp_path / "rules.d" / "10-rules.yaml", RULES)
    config = write(
        tmp_path / "rulekit.yaml",
        "rules: rules.d\nstorage: 'sqlite:///missing/rulekit.sqlite3?synchronous=normal'\n",
    )
    result = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "missing").exists()
