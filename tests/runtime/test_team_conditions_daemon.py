"""Rules that read ``team`` in a real daemon (SQLite and PostgreSQL, the fake Chatra): before any
agent signed in everyone counts as online; an agent whose console page is open is online, one
who says they are away is not; ``rulekit why`` and ``history`` show the presence each decision
used."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from daemons import chat_started, wait_for, write_setup

from rulekit.cli.main import cli

TOKEN = "anna-console-token-0123456789"

RULES = """\
- name: Nobody online
  on: {channel: online-chat, event: created}
  if: team.online_in('support') | length == 0
  do:
    - autoreply: {text: "Nobody is online: we answer by email"}
- name: Who is online
  on: {channel: online-chat, event: created}
  if: team.online_in('support')
  do:
    - autoreply:
        text: "online: {{ team.online|join(',') }}; tracked: {{ team.tracked }}; \\
          open: {{ team.open_count('ANNA@example.com') }}"
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def setup(folder: Path, chatra, storage: str | None) -> Path:
    config = write_setup(folder, RULES, chatra=chatra)
    digest = hashlib.sha256(TOKEN.encode()).hexdigest()
    text = config.read_text().replace(
        "  - {email: anna@example.com, groups: [support], channels: [online-chat]}\n",
        f"  - {{email: anna@example.com, groups: [support], channels: [online-chat],"
        f" token_sha256: {digest}}}\n"
        "  - {email: lena@example.com, groups: [support], channels: [online-chat]}\n",
    )
    if storage is not None:
        text = text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
    config.write_text(text)
    return config


def test_rules_see_who_is_online_as_the_console_says(tmp_path, processes, chatra, storage):
    config = setup(tmp_path, chatra, storage)
    daemon = processes(config).wait_ready()

    def replies(count: int) -> list[str]:
        wait_for(lambda: len(chatra.sent) >= count, timeout=30)
        return [message["text"] for message in chatra.sent]

    # nobody ever signed in: presence is not tracked, everyone with access counts as online
    assert httpx.post(daemon.webhook_url, content=chat_started(1)).status_code == 200
    assert replies(1) == [
        "online: anna@example.com,lena@example.com; tracked: False; open: 0",
    ]

    with httpx.Client(base_url=daemon.url, timeout=10) as console:
        signed_in = console.post("/console/login", data={"token": TOKEN})
        assert signed_in.status_code == 303, signed_in.text
        console.cookies = signed_in.cookies

        def anna() -> str:
            agents = console.get("/console/api/presence").json()["agents"]
            return next(a["status"] for a in agents if a["email"] == "anna@example.com")

        with console.stream("GET", "/console/stream") as stream:
            assert stream.status_code == 200
            wait_for(lambda: anna() == "online")
            # Anna's page is open: she is online, Lena (never signed in) is not
            assert httpx.post(daemon.webhook_url, content=chat_started(2)).status_code == 200
            assert replies(2)[1] == "online: anna@example.com; tracked: True; open: 0"

            away = console.post("/console/api/presence", json={"status": "away"})
            assert away.status_code == 200, away.text
            assert httpx.post(daemon.webhook_url, content=chat_started(3)).status_code == 200
            assert replies(3)[2] == "Nobody is online: we answer by email"

    runner = CliRunner()
    found = runner.invoke(cli, ["history", "--config", str(config), "--format", "json"])
    assert found.exit_code == 0, found.output
    third, _, first = json.loads(found.output)["events"]
    assert third["team"] == {"tracked": True, "online_in": {"support": []}}
    assert first["team"]["tracked"] is False
    shown = runner.invoke(cli, ["why", third["event_id"], "--config", str(config)])
    assert "team (as the rules read it)\n  online in support: nobody" in shown.output
    lines = runner.invoke(cli, ["history", "--config", str(config)]).output.splitlines()
    assert lines[0].endswith("team: online in support: nobody")
    assert lines[2].endswith(
        "team: presence not tracked: everyone with access counts as online; "
        "online: anna@example.com, lena@example.com; "
        "online in support: anna@example.com, lena@example.com; "
        "open conversations of anna@example.com: 0"
    )


def test_rules_that_do_not_read_the_team_send_no_team(tmp_path, serve, chatra):
    rules = "- name: Greet\n  on: {channel: online-chat}\n  do: [{autoreply: {text: hi}}]\n"
    server = serve(write_setup(tmp_path, rules, chatra=chatra))
    assert server.daemon.evaluator is not None and not server.daemon.evaluator.reads_team
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: chatra.sent, timeout=30)
    with server.daemon.store.transaction() as state:
        [record] = state.history(limit=1)
    assert "team" not in record.trace


TIMED = """\
- name: Still nobody online
  on: {channel: online-chat, event: created}
  after: 2s
  unless: team.online
  do:
    - autoreply: {text: "Still nobody online"}
"""


def started_now(n: int) -> bytes:
    """chat_started(n), written now (the timer counts from the message's time)."""
    body = json.loads(chat_started(n))
    body["message"]["createdAt"] = int(time.time() * 1000)
    return json.dumps(body).encode()


@pytest.mark.slow
def test_a_timers_unless_reads_the_team_when_it_fires(tmp_path, processes, chatra, storage):
    config = setup(tmp_path, chatra, storage)
    (tmp_path / "rules.d" / "rules.yaml").write_text(TIMED)
    daemon = processes(config).wait_ready()
    runner = CliRunner()

    def fired() -> list[dict]:
        found = runner.invoke(cli, ["history", "--config", str(config), "--format", "json"])
        events = json.loads(found.output)["events"]
        return [e for e in events if "fired" in e.get("timers", {})]

    with httpx.Client(base_url=daemon.url, timeout=10) as console:
        signed_in = console.post("/console/login", data={"token": TOKEN})
        console.cookies = signed_in.cookies
        with console.stream("GET", "/console/stream") as stream:
            assert stream.status_code == 200
            assert console.post("/console/api/presence", json={"status": "away"}).status_code == 200
            assert httpx.post(daemon.webhook_url, content=started_now(1)).status_code == 200
            wait_for(lambda: chatra.sent, timeout=30)
            [away] = fired()
            assert away["timers"]["fired"]["outcome"] == "fired"
            assert away["team"] == {"tracked": True, "online": []}

            assert (
                console.post("/console/api/presence", json={"status": "online"}).status_code == 200
            )
            assert httpx.post(daemon.webhook_url, content=started_now(2)).status_code == 200
            back = wait_for(lambda: len(found := fired()) == 2 and found[0], timeout=30)
    assert back["timers"]["fired"]["outcome"] == "unless"  # Anna is back: nothing sent
    assert back["team"] == {"tracked": True, "online": ["anna@example.com"]}
    assert [message["text"] for message in chatra.sent] == ["Still nobody online"]
