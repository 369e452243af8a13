"""Event data never drives the terminal: ``why``, ``history``, ``replay`` and ``test`` print
control, C1 and bidi characters from recorded events as visible escapes (text), or as JSON
escapes (``--format json``, still valid JSON holding the original values)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from audit_site import CONFIG, RULES, T0, Site, record
from click.testing import CliRunner
from scaffold import write

from rulekit.cli.main import cli
from rulekit.engine.engine import Engine
from rulekit.event import Event
from rulekit.safetext import UNSAFE
from rulekit.store.sqlite import SQLiteStore

# clear screen, write the clipboard (OSC 52), overwrite the line, an 8-bit CSI, reverse the
# text, and forge a line of output
HOSTILE = "\x1b[2J\x1b]52;c;SGVsbG8=\x07\rok \x9b31m\u202eevil\u2066\u2028\nrule X fired"
EVENT_ID = "chatra:message:\x1b[2Jm-1"


def unsafe_in(text: str) -> list[str]:
    """The characters of ``text`` a terminal would act on (line breaks excepted)."""
    return sorted({char for char in text if ord(char) in UNSAFE and char != "\n"})


SENT = HOSTILE.replace("\u202e", "").replace("\u2066", "")
""":data:`HOSTILE` in a Slack message (a replay renders one): without its bidi controls."""


def holds_hostile(value: object) -> bool:
    """Whether a string somewhere in JSON data holds :data:`HOSTILE` as it was (or as a message
    people read holds it)."""
    if isinstance(value, str):
        return HOSTILE in value or SENT in value
    if isinstance(value, list):
        return any(holds_hostile(item) for item in value)
    if isinstance(value, dict):
        return any(holds_hostile(item) for item in value.values())
    return False


def hostile_site(tmp_path: Path) -> Site:
    root = tmp_path / "site"
    config = write(root / "rulekit.yaml", CONFIG)
    write(root / "rules.d" / "rules.yaml", RULES)
    engine = Engine.from_path(root / "rules.d", config)
    store = SQLiteStore(root / "audit.sqlite3")
    client = {
        "id": "c-" + HOSTILE,
        "name": "Name " + HOSTILE,
        "display_name": "Shown " + HOSTILE,
        "email": "x@example.org",
    }
    event = Event(
        id=EVENT_ID,
        channel="online-chat",
        event="message",
        occurred_at=T0,
        conversation={"id": "conv-" + HOSTILE, "status": "open"},
        client=client,
        message={"id": "m1", "text": "refund " + HOSTILE, "author": "client"},
    )
    try:
        body = json.dumps({"client": {"id": client["id"]}, "t": HOSTILE}).encode()
        (job,) = record(store, engine, event, body)
        with store.transaction() as state:
            state.record_attempt(job, "dead", error="failed: " + HOSTILE, now=T0 + timedelta(1))
    finally:
        store.close()
    return Site(root, config, root / "audit.sqlite3")


def text_outputs(site: Site, tmp_path: Path) -> dict[str, str]:
    candidate = write(tmp_path / "candidate.yaml", RULES.replace("Refund from", "Money from"))
    commands = {
        "why": ["why", EVENT_ID],
        "why --show-content --raw": ["why", EVENT_ID, "--show-content", "--raw"],
        "history": ["history"],
        "history --show-content": ["history", "--show-content"],
        "replay": ["replay", "--rules", str(candidate), "--all"],
        "replay --show-content": ["replay", "--rules", str(candidate), "--show-content"],
    }
    outputs = {}
    for name, args in commands.items():
        result = site.run(*args)
        assert result.exit_code == 0, (name, result.output)
        outputs[name] = result.output
    return outputs


def test_audit_commands_escape_control_characters(tmp_path: Path) -> None:
    site = hostile_site(tmp_path)
    outputs = text_outputs(site, tmp_path)
    for name, output in outputs.items():
        assert unsafe_in(output) == [], name
        assert "\\x1b[2J" in output, name  # shown, escaped
        # the forged line stays inside the line of the value that holds it
        assert not any(line.startswith("rule X fired") for line in output.split("\n")), name
    assert (
        "\\x1b]52;c;SGVsbG8=\\x07\\rok \\x9b31m\\u202eevil\\u2066\\u2028\\nrule X"
        in (outputs["history --show-content"])
    )


@pytest.mark.parametrize(
    "args",
    [
        ["why", EVENT_ID, "--show-content", "--raw"],
        ["history", "--show-content"],
        ["replay", "--rules", "CANDIDATE", "--show-content"],
    ],
)
def test_json_output_is_valid_and_keeps_the_values(tmp_path: Path, args: list[str]) -> None:
    site = hostile_site(tmp_path)
    candidate = write(tmp_path / "candidate.yaml", RULES.replace("Refund from", "Money from"))
    args = [str(candidate) if arg == "CANDIDATE" else arg for arg in args]
    result = site.run(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    assert unsafe_in(result.output) == []
    assert holds_hostile(json.loads(result.stdout))


def test_rulekit_test_escapes_inputs_and_suites(tmp_path: Path) -> None:
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    rules = write(tmp_path / "rules.d" / "rules.yaml", RULES)
    event = {
        "id": "e-" + HOSTILE,
        "channel": "online-chat",
        "event": "message",
        "client": {"id": "c1", "name": "Name " + HOSTILE},
        "message": {"text": "refund " + HOSTILE, "author": "client"},
    }
    inputs = write(tmp_path / "event.json", json.dumps(event))
    suite = write(
        tmp_path / "suite.yaml",
        "tests:\n  - name: never passes\n    inputs:\n      - event: "
        + json.dumps(event)
        + "\n    expect:\n      - {action: telegram}\n",
    )
    runner = CliRunner()
    base = ["test", "--rules", str(rules.parent), "--config", str(config)]
    for path in (inputs, suite):
        text = runner.invoke(cli, [*base, str(path)])
        assert text.exit_code in (0, 1), text.output
        assert unsafe_in(text.output) == []
        assert "\\x1b[2J" in text.output or "\\u001b[2J" in text.output  # JSON params
        assert not any(line.startswith("rule X fired") for line in text.output.split("\n"))
    as_json = runner.invoke(cli, [*base, "--format", "json", str(inputs)])
    assert unsafe_in(as_json.output) == []
    assert holds_hostile(json.loads(as_json.stdout))


def test_errors_on_stderr_are_escaped(tmp_path: Path) -> None:
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    rules = write(tmp_path / "rules.d" / "rules.yaml", RULES)
    missing = tmp_path / "input\x1b[2J\x9b\u202e.json"
    result = CliRunner().invoke(
        cli, ["test", "--rules", str(rules.parent), "--config", str(config), str(missing)]
    )
    assert result.exit_code != 0
    assert "input\\x1b[2J\\x9b\\u202e.json" in result.output
    assert unsafe_in(result.output) == []
