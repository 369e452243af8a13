"""Which files of a rules folder are rules, and how their names are shown: hidden files that
tools leave beside the rules are not loaded, and a name holding a newline, an escape or bytes
that are no UTF-8 is shown escaped (never a traceback, never a forged line)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rulekit.rules.files import display_path, is_rules_file_name

RULE = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - play_sound: {sound: bell}
"""
EVENT = """\
{"channel": "online-chat", "event": "created", "occurred_at": "2025-03-14T10:00:00Z",
 "conversation": {"id": "c1"}, "message": {"text": "hi", "author": "client"}}
"""


def rulekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (the timeout only guards the test run against a hang)."""
    return subprocess.run(
        [sys.executable, "-m", "rulekit.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=120,
    )


@pytest.mark.parametrize(
    "name",
    ["._10-greeting.yaml", ".#10-greeting.yaml", ".10-greeting.yaml", "..data", "a.yaml~"],
)
def test_hidden_files_and_backups_are_not_rules(name):
    assert not is_rules_file_name(name)


def test_what_tools_leave_beside_the_rules_is_not_loaded(tmp_path):
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "10-greeting.yaml").write_text(RULE)
    # macOS's AppleDouble file (binary) from a copy or an archive; an editor's lock symlink
    (rules / "._10-greeting.yaml").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    os.symlink("admin@host.1234:1700000000", rules / ".#10-greeting.yaml")
    (rules / ".10-greeting.yaml").write_text(RULE)  # a tool's copy, renamed over the file next
    (rules / "10-greeting.yaml~").write_text(RULE)
    (rules / ".10-greeting.yaml.swp").write_bytes(b"b0VIM 9.0\x00\x00")
    done = rulekit("check", "rules.d", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok: 1 rules in 1 file(s)" in done.stdout


def test_rulekit_test_on_a_folder_skips_hidden_files(tmp_path):
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "r.yaml").write_text(RULE)
    events = tmp_path / "events"
    events.mkdir()
    (events / "created.json").write_text(EVENT)
    (events / "._created.json").write_bytes(b"\x00\x05\x16\x07Mac OS X")
    done = rulekit("test", "--rules", "rules.d", "events", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Greet" in done.stdout
    assert "._created" not in done.stdout + done.stderr


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS file names must be UTF-8")
def test_a_file_name_that_is_no_utf8_is_shown_escaped_not_a_traceback(tmp_path):
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "10-greeting.yaml").write_text(RULE)
    (Path(os.fsdecode(bytes(rules) + b"/20-gr\xfc\xdfe.yaml"))).write_text(RULE)
    done = rulekit("check", "rules.d", cwd=tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode == 1
    assert "rules.d/20-gr\\udcfc\\udcdfe.yaml:1: [0]: rule name 'Greet' is already used" in (
        done.stderr
    )


def test_a_file_name_cannot_forge_a_line_or_drive_the_terminal(tmp_path):
    rules = tmp_path / "rules.d"
    rules.mkdir()
    (rules / "x\nerror: all good\x1b[2J.yaml").write_text("- name: A\n  on: {channel: [\n")
    done = rulekit("check", "rules.d", cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("error: rules.d/x\\nerror: all good\\x1b[2J.yaml:3: invalid YAML")
    assert not any(line.startswith("error: all good") for line in lines)
    assert "\x1b" not in done.stderr


def test_paths_are_shown_as_named_not_where_symlinks_lead(tmp_path, monkeypatch):
    (tmp_path / "releases" / "41").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/41")
    monkeypatch.chdir(tmp_path)
    assert display_path(Path("current/rules.d/a.yaml")) == "current/rules.d/a.yaml"
    assert display_path(tmp_path / "current" / "a.yaml") == "current/a.yaml"


@pytest.mark.parametrize(
    "args",
    [("check", "{long}"), ("test", "--rules", "{long}", "event.json"), ("test", "{long}")],
)
def test_a_path_the_system_refuses_is_an_error_not_a_traceback(tmp_path, args):
    """Besides "no such file", listing or looking at a path can fail in other ways (a name too
    long, permission denied, a loop of symlinks): each is said, with the path."""
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "r.yaml").write_text(RULE)
    (tmp_path / "event.json").write_text(EVENT)
    long = "x" * 300  # over the 255 bytes a file name may have
    done = rulekit(*(arg.format(long=long) for arg in args), cwd=tmp_path)
    assert "Traceback" not in done.stderr
    assert done.returncode in (1, 2)
    assert f"error: {long}: cannot read" in done.stderr
    assert "File name too long" in done.stderr
