"""An agent of the directory is named to a console viewer only when the viewer may see them
(``Viewer.may_see_agent``: the admin, the agent themselves, the agents sharing a channel with
them), wherever the console shows who acted: an event's ``agent``, its message's author, the
conversation's ``assignee`` and ``last_agent``, the thread.

Pavel, an agent of vip-chat only, starts a chat of online-chat from Chatra's own app (no agent
has rulekit's access to a new channel until an admin grants it). Anna (online-chat only) sees
the chat and its message, written by "an agent", but not Pavel: not in the event list, not in
the conversation list or view, not over the live stream. Carla (both channels) and the admin
see him, as the presence endpoint shows him to them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from console_helpers import messages, opened, signed_in_with, two_channel_team
from scaffold import REPO
from workspace_helpers import wait_for

pytest.importorskip("rulekit_chatra")

SECRET = "agent-privacy-secret-0123456789"
TOKENS = {
    "anna": "anna-agent-privacy-token-0123",
    "carla": "carla-agent-privacy-token-0123",
    "admin": "admin-agent-privacy-token-0123",
}
STARTED = REPO / "examples" / "chatra" / "chat_started_bound_user_agent_initiated.json"
PAVEL = "pavel@shop.example.com"
"""The agent who started the sample chat from Chatra's app (an agent of vip-chat only)."""
TEXT = "Hallo Jonas, brauchen Sie Hilfe mit Ihrer Bestellung?"
END = {"type": "reload", "ok": True, "version": "end-marker"}
RULES = """
- name: Ring
  on: {channel: online-chat, event: created}
  do:
    - play_sound: {sound: bell, to: everyone}
"""


@contextlib.contextmanager
def running(folder: Path) -> Iterator[tuple[str, Any]]:
    """A daemon on uvicorn with the fake Chatra: its URL, and a way to publish on its feed."""
    vip_agent = f"""\
- email: {PAVEL}
  name: Pavel Novak
  groups: [support]
  channels: [vip-chat]
"""
    with two_channel_team(folder, RULES, SECRET, TOKENS, vip_agent) as found:
        yield found


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with running(tmp_path) as found:
        yield found


def post_started(url: str) -> None:
    response = httpx.post(f"{url}/webhooks/online-chat/{SECRET}", content=STARTED.read_bytes())
    assert response.status_code == 200, response.text


def everything(client: httpx.Client) -> dict[str, Any]:
    """What the viewer reads of the sample chat: the event list's entry, the conversation list,
    the conversation's view."""

    def entry() -> dict[str, Any] | None:
        events = client.get("/console/api/recent").json()["events"]
        return next((e for e in events if e["event"]["event"] == "created"), None)

    listed: dict[str, Any] = wait_for(entry, "the created event in the event list")
    conversation = listed["event"]["conversation"]["id"]
    found = client.get("/console/api/conversations")
    assert found.status_code == 200, found.text
    view = client.get(f"/console/api/conversations/{quote(conversation, safe='')}")
    assert view.status_code == 200, view.text
    return {"recent": listed, "list": found.json(), "view": view.json()}


def test_an_agent_the_viewer_may_not_see_is_not_named_where_they_acted(
    daemon: tuple[str, Any],
) -> None:
    url, _ = daemon
    post_started(url)
    seen = {}
    for who in TOKENS:
        with signed_in_with(url, TOKENS[who]) as client:
            seen[who] = everything(client)
    for who in ("carla", "admin"):  # they see Pavel, as presence shows him to them
        assert PAVEL in repr(seen[who]), who
        assert seen[who]["recent"]["event"]["agent"]["email"] == PAVEL
    anna = seen["anna"]
    assert PAVEL not in repr(anna) and "Pavel" not in repr(anna)
    # what Pavel wrote is the conversation's, and stays: only who wrote it is not named
    event = anna["recent"]["event"]
    assert event["message"]["text"] == TEXT and event["message"]["author"] == "agent"
    assert event["agent"]["email"] is None and event["agent"]["known"] is True
    thread = anna["view"]["thread"]
    assert [(m["author"], m["agent"], m["text"]) for m in thread] == [("agent", None, TEXT)]


def test_the_live_stream_names_no_agent_the_viewer_may_not_see(daemon: tuple[str, Any]) -> None:
    url, publish = daemon
    with (
        signed_in_with(url, TOKENS["anna"]) as anna,
        anna.stream("GET", "/console/stream") as stream,
    ):
        lines = messages(opened(stream.iter_lines()))
        post_started(url)
        seen = []
        for message in lines:
            seen.append(message)
            if message.get("event") == "created":
                publish(END)
            if message.get("version") == "end-marker":
                break
    assert any(m.get("event") == "created" for m in seen)
    assert PAVEL not in repr(seen) and "Pavel" not in repr(seen)


def test_an_assignee_the_viewer_may_not_see_is_not_named_but_the_conversation_is_assigned(
    tmp_path: Path,
) -> None:
    """Boris was assigned while he had access to online-chat, then lost it (a reload): Anna
    is told that someone is assigned (``assignee_hidden``), not who; the admin is told."""
    from workspace_helpers import path, running

    boris = "boris@example.com"
    with running("sqlite", tmp_path) as site:
        site.started()
        config = tmp_path / "rulekit.yaml"
        only_forms = config.read_text()
        config.write_text(only_forms.replace("channels: [forms]", "channels: [forms, online-chat]"))
        assert site.reload()
        with site.client("admin") as admin:
            answer = admin.post(f"{path()}/assign", json={"agent": boris})
            assert answer.status_code == 200, answer.text
        config.write_text(only_forms)
        assert site.reload()
        with site.client("anna") as anna, site.client("admin") as admin:
            seen = {
                "list": anna.get("conversations").json(),
                "view": anna.get(path()).json(),
                "recent": anna.get("recent").json(),
            }
            assert admin.get(path()).json()["conversation"]["assignee"] == boris
        assert boris not in repr(seen) and "Boris" not in repr(seen)
        for conversation in (
            seen["list"]["conversations"][0]["conversation"],
            seen["view"]["conversation"],
        ):
            assert conversation["assignee"] is None and conversation["assignee_hidden"] is True


def test_an_action_s_result_does_not_name_an_agent_the_viewer_may_not_see(
    tmp_path: Path,
) -> None:
    """A rule assigned Boris while he had access to online-chat; then he lost it (a reload).
    The conversation's actions still list the rule's ``assign`` job: its result says that it
    assigned someone, not whom, to Anna; the admin is told."""
    from workspace_helpers import RULES, path, running

    boris = "boris@example.com"
    assigns = RULES + (
        "- name: Take new chats\n"
        "  on: {channel: online-chat, event: created}\n"
        "  do:\n"
        f"    - assign: {{agent: {boris}, only_online: false}}\n"
    )
    with running("sqlite", tmp_path) as site:
        config, rules = tmp_path / "rulekit.yaml", tmp_path / "rules.d" / "rules.yaml"
        only_forms = config.read_text()
        config.write_text(only_forms.replace("channels: [forms]", "channels: [forms, online-chat]"))
        rules.write_text(assigns)
        assert site.reload()
        site.started()
        event_id = "online-chat:msg:Acb7t59BkCvoXi6SS"
        wait_for(lambda: [j for j in site.jobs_of(event_id) if j.status == "done"], "the job")
        config.write_text(only_forms)
        rules.write_text(RULES)
        assert site.reload()
        with site.client("anna") as anna, site.client("admin") as admin:
            (shown,) = anna.get(path()).json()["actions"]
            (told,) = admin.get(path()).json()["actions"]
            seen = anna.get(path()).text
        assert told["result"]["assigned"] == boris
        assert shown["result"]["assigned"] is None and shown["result"]["changed"] is True
        assert boris not in seen and "Boris" not in seen
