"""The audit commands on a PostgreSQL store they cannot reach say why in one line — the
server's own reason (refused, no such database) — not after the pool gave up with "couldn't get
a connection", and without a warning per attempt of the pool's."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner
from scaffold import write

from rulekit.cli.main import cli

RULES = """
- name: Bell
  on: {channel: online-chat, event: created}
  do:
    - play_sound: {sound: bell, to: everyone}
"""


def run(tmp_path: Path, storage: str, *args: str):
    config = write(
        tmp_path / "rulekit.yaml",
        f"rules: rules.d\nstorage: {storage!r}\nchannels:\n  online-chat: {{provider: chatra}}\n",
    )
    write(tmp_path / "rules.d" / "rules.yaml", RULES)
    return CliRunner().invoke(cli, [*args, "--config", str(config)])


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once it is closed


@pytest.mark.parametrize("command", [("history",), ("stats",), ("why", "e-1"), ("retry",)])
def test_a_server_that_refuses_is_said_at_once(tmp_path, command):
    storage = f"postgresql://rulekit:hunter2@127.0.0.1:{closed_port()}/rulekit?pool_timeout=1"
    result = run(tmp_path, storage, *command)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: PostgreSQL store postgresql://rulekit:***@127.0.0.1:")
    assert "Connection refused" in lines[0], lines[0]
    assert "hunter2" not in result.output


def test_a_database_that_does_not_exist_is_named(tmp_path):
    url = os.environ.get("RULEKIT_TEST_POSTGRES")
    if not url:
        pytest.skip("RULEKIT_TEST_POSTGRES is unset")
    parts = urlsplit(url)
    missing = urlunsplit(parts._replace(path="/rulekit_no_such_database", query="pool_timeout=1"))
    result = run(tmp_path, missing, "history")
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 1, lines
    assert 'database "rulekit_no_such_database" does not exist' in lines[0], lines[0]
