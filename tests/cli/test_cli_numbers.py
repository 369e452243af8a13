"""Numbers on the command line beyond what their use takes are usage errors (exit code 2,
naming the option), never a traceback from the database driver, and never a daemon that starts
and then cannot work (a port the system truncates, a job lease no time can hold)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HUGE = "99999999999999999999999"


def rulekit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess (the timeout only guards the test run against a daemon that
    starts when it should refuse)."""
    return subprocess.run(
        [sys.executable, "-m", "rulekit.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config and rules, with the store created."""
    (tmp_path / "rules.d").mkdir()
    (tmp_path / "rules.d" / "rules.yaml").write_text(
        "- name: Ring\n  on: {channel: online-chat, event: created}\n"
        "  do: [{play_sound: {sound: bell}}]\n"
    )
    (tmp_path / "rulekit.yaml").write_text("rules: rules.d\nstorage: sqlite:///rulekit.sqlite3\n")
    created = rulekit("db", "upgrade", "--config", "rulekit.yaml", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return tmp_path


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("retry", HUGE), "[JOB_IDS]..."),
        (("requeue", HUGE), "[INBOX_IDS]..."),
        (("history", "--limit", HUGE), "--limit"),
        (("replay", "--rules", "rules.d", "--limit", HUGE), "--limit"),
        (("run", "--port", "99999999"), "--port"),
        (("run", "--port", "-1"), "--port"),
        (("run", "--job-lease", "1e308"), "--job-lease"),
        (("run", "--job-lease", "inf"), "--job-lease"),
        (("run", "--job-lease", "nan"), "--job-lease"),
    ],
)
def test_numbers_beyond_their_use_are_usage_errors(site, args, option):
    done = rulekit(*args, "--config", "rulekit.yaml", cwd=site)
    assert "Traceback" not in done.stderr
    assert done.returncode == 2, done.stderr
    assert f"Invalid value for '{option}'" in done.stderr


def test_the_largest_id_a_store_holds_is_looked_up(site):
    done = rulekit("requeue", str(2**63 - 1), "--config", "rulekit.yaml", cwd=site)
    assert "Traceback" not in done.stderr
    assert "no set-aside webhook 9223372036854775807" in done.stdout + done.stderr
