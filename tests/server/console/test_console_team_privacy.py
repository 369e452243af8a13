"""What the rules read of ``team`` reaches a console viewer only as far as the console's presence
shows them the team: a real daemon (``rulekit run``'s app on uvicorn, SQLite, the bundled Chatra
plugin and the fake Chatra) evaluates a rule of online-chat that reads the open conversations of
Boris (an agent of vip-chat only), of the event's client and of an address that is nobody's.

Anna (online-chat only) sees the event, but neither Boris nor the stranger: not in the event
list, not in the conversation's events, not over the live stream, where she is told how many
were left out. Carla (both channels) sees Boris, as the presence endpoint shows him to her; the
admin sees everything. The event's own client is named to every agent who sees the event."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_helpers import messages, opened, sha, signed_in_with, two_channel_team
from scaffold import REPO
from workspace_helpers import wait_for

pytest.importorskip("rulekit_chatra")

SECRET = "team-privacy-secret-0123456789"
TOKENS = {
    "anna": "anna-team-privacy-token-0123",
    "boris": "boris-team-privacy-token-0123",
    "carla": "carla-team-privacy-token-0123",
    "admin": "admin-team-privacy-token-0123",
}
STARTED = REPO / "examples" / "chatra" / "chat_started_bound_user_agent_initiated.json"
CLIENT = "jonas.schmidt@example.net"
"""The email of the sample chat's client."""
BORIS = "boris@example.com"
STRANGER = "stranger@example.org"
END = {"type": "reload", "ok": True, "version": "end-marker"}

RULES = f"""
- name: Who could answer
  on: {{channel: online-chat, event: created}}
  if: >-
    team.online_in('support') | length > 0
    and team.open_count('{BORIS}') == 0
    and team.open_count(client.email) == 0
    and team.open_count('{STRANGER}') == 0
  do:
    - play_sound: {{sound: bell, to: everyone}}
"""

ONLINE = "online in support: anna@example.com, carla@example.com"
OPEN = {who: f"open conversations of {who}: 0" for who in (BORIS, CLIENT, STRANGER)}
SEEN = {
    "admin": [ONLINE, OPEN[BORIS], OPEN[CLIENT], OPEN[STRANGER]],
    "carla": [ONLINE, OPEN[BORIS], OPEN[CLIENT], "open conversations of 1 other: not shown"],
    "anna": [ONLINE, OPEN[CLIENT], "open conversations of 2 others: not shown"],
}
"""The event's ``team`` as each viewer is shown it."""


@contextlib.contextmanager
def running(folder: Path) -> Iterator[tuple[str, Any]]:
    """A daemon on uvicorn with the fake Chatra: its URL, and a way to publish on its feed."""
    vip_agent = f"""\
- email: {BORIS}
  groups: [support]
  channels: [vip-chat]
  token_sha256: {sha(TOKENS["boris"])}
"""
    with two_channel_team(folder, RULES, SECRET, TOKENS, vip_agent) as found:
        yield found


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with running(tmp_path) as found:
        yield found


def signed_in(url: str, who: str) -> httpx.Client:
    return signed_in_with(url, TOKENS[who])


def post_started(url: str) -> None:
    body = STARTED.read_bytes()
    response = httpx.post(f"{url}/webhooks/online-chat/{SECRET}", content=body)
    assert response.status_code == 200, response.text


def listed(client: httpx.Client) -> dict[str, Any]:
    """The created event's entry in the console's event list, once it is processed."""

    def entry() -> dict[str, Any] | None:
        events = client.get("/console/api/recent").json()["events"]
        return next((e for e in events if e["event"]["event"] == "created"), None)

    found: dict[str, Any] = wait_for(entry, "the created event in the event list")
    return found


def in_conversation(client: httpx.Client, conversation_id: str) -> dict[str, Any]:
    """The created event's entry among its conversation's events."""
    answer = client.get(f"/console/api/conversations/{conversation_id}")
    assert answer.status_code == 200, answer.text
    return next(e for e in answer.json()["events"] if e["event"]["event"] == "created")


def presence_of(client: httpx.Client) -> set[str]:
    answer = client.get("/console/api/presence")
    assert answer.status_code == 200, answer.text
    return {agent["email"] for agent in answer.json()["agents"]}


def test_the_event_list_names_only_the_agents_the_viewer_may_see(
    daemon: tuple[str, Any],
) -> None:
    url, _ = daemon
    with (
        signed_in(url, "anna") as anna,
        signed_in(url, "carla") as carla,
        signed_in(url, "admin") as admin,
        anna.stream("GET", "/console/stream") as anna_stream,
        carla.stream("GET", "/console/stream") as carla_stream,
    ):
        opened(anna_stream.iter_lines())  # both online before the event is evaluated
        opened(carla_stream.iter_lines())
        post_started(url)
        viewers = {"anna": anna, "carla": carla, "admin": admin}
        entries = {who: listed(client) for who, client in viewers.items()}
        assert entries["admin"]["event"]["client"]["email"] == CLIENT
        conversation = entries["admin"]["event"]["conversation"]["id"]
        for who, client in viewers.items():
            assert entries[who]["team"] == SEEN[who], who
            assert in_conversation(client, conversation)["team"] == SEEN[who], who
        # the same rule as the presence endpoint's: Boris is Carla's to see, not Anna's
        assert BORIS not in presence_of(anna) and BORIS in presence_of(carla)


def test_the_live_stream_names_only_the_agents_the_viewer_may_see(
    daemon: tuple[str, Any],
) -> None:
    url, publish = daemon
    with (
        signed_in(url, "anna") as anna,
        signed_in(url, "carla") as carla,
        signed_in(url, "admin") as admin,
        anna.stream("GET", "/console/stream") as anna_stream,
        carla.stream("GET", "/console/stream") as carla_stream,
        admin.stream("GET", "/console/stream") as admin_stream,
    ):
        viewers = {"anna": anna, "carla": carla, "admin": admin}
        streams = {
            "anna": messages(opened(anna_stream.iter_lines())),
            "carla": messages(opened(carla_stream.iter_lines())),
            "admin": messages(opened(admin_stream.iter_lines())),
        }
        post_started(url)
        seen_by = {who: [] for who in streams}
        seen_by["anna"].append(next(m for m in streams["anna"] if m.get("event") == "created"))
        publish(END)  # after the event: every stream has had its chance to carry it
        for who, stream in streams.items():
            seen = seen_by[who]
            for message in stream:
                seen.append(message)
                if message.get("version") == "end-marker":
                    break
            created = next(m for m in seen if m.get("event") == "created")
            assert created["team"] == SEEN[who], who
            assert created["team"] == listed(viewers[who])["team"]  # as the event list says
            # nothing unworded goes out: Boris's and the stranger's emails are in no message
            text = repr(seen)
            if who == "anna":
                assert BORIS not in text and STRANGER not in text
            assert "team_read" not in text
