"""The live feed says which presence decided an event, as the console's event list does: a real
daemon (``rulekit run``'s app on uvicorn, SQLite, the bundled Chatra plugin and the fake Chatra)
evaluates rules that read ``team`` while an agent's console is open. Over the stream and in
headless Chromium, the feed's entry of such an event (a webhook's, an agent's change from the
console, a fired timer's) carries the same ``team`` summary as its entry of the event list; an
event whose rules did not read ``team`` carries none, and an agent of another channel receives
neither."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium, chromium_or_skip, wait_for
from console_helpers import daemon_with_feed, messages, opened, sha, signed_in_with
from scaffold import REPO
from test_console_docs import like

pytest.importorskip("rulekit_chatra")

SECRET = "feed-team-secret-0123456789"
TOKENS = {"anna": "anna-feed-team-token-0123", "boris": "boris-feed-team-token-0123"}
SAMPLES = REPO / "examples" / "chatra"
END = {"type": "reload", "ok": True, "version": "end-marker"}
VISITOR = "oaedoecve6pr5n8i4p40mgg1w103dgdzvgpmm82i"
CONVERSATION = f"online-chat%3A{VISITOR}"
MARIA = {"name": "Maria Lopez"}
ANNA_ONLINE = "online in support: anna@example.com"
"""What the rules read of ``team`` while Anna's console is open (Boris is of another channel)."""


RULES = """
- name: Ring while support is online
  on: {channel: online-chat, event: created}
  if: team.online_in('support') | length > 0
  do:
    - play_sound: {sound: bell, to: everyone}

- name: Nobody of support online
  on: {channel: online-chat, event: created}
  if: team.online_in('support') | length == 0
  do:
    - play_sound: {sound: alert, to: everyone}

- name: Chime on client messages
  on: {channel: online-chat, event: message}
  do:
    - play_sound: {sound: chime, to: everyone}

- name: Ring on the client's data changed while someone is online
  on: {channel: online-chat, event: client_updated}
  if: team.online
  do:
    - play_sound: {sound: bell, to: everyone}
"""

TIMED = """
- name: Still nobody online
  on: {channel: online-chat, event: created}
  after: 1s
  unless: team.online
  do:
    - play_sound: {sound: alert, to: everyone}
"""


@contextlib.contextmanager
def running(folder: Path, rules: str) -> Iterator[tuple[str, Any]]:
    """A daemon with ``rules`` on uvicorn and the fake Chatra: its URL, and a way to publish on
    its feed."""
    from rulekit_chatra.testing import FakeChatra

    with FakeChatra() as chatra, served(folder, rules, chatra) as found:
        yield found


@contextlib.contextmanager
def served(folder: Path, rules: str, chatra: Any) -> Iterator[tuple[str, Any]]:
    chatra.add_client(VISITOR, name=None)
    config = f"""
        rules: rules.d
        storage: sqlite:///rulekit.sqlite3
        channels:
          online-chat:
            provider: chatra
            webhook_secret: {SECRET}
            default_group: support
            base_url: {chatra.base_url}
            public_key: {chatra.keys["public_key"]}
            secret_key: {chatra.keys["secret_key"]}
          vip-chat: {{provider: chatra, webhook_secret: {SECRET}-vip, default_group: support}}
        groups: [support]
        agents:
          - email: anna@example.com
            groups: [support]
            channels: [online-chat]
            token_sha256: {sha(TOKENS["anna"])}
          - email: boris@example.com
            groups: [support]
            channels: [vip-chat]
            token_sha256: {sha(TOKENS["boris"])}
        dispatcher: {{backoff_base: 0.05, backoff_max: 1.0}}
        """
    with daemon_with_feed(folder, rules, config) as found:
        yield found


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    with running(tmp_path, RULES) as found:
        yield found


def documented() -> Any:
    """The stream's event in docs/console.md's section on the live feed."""
    text = (REPO / "docs" / "console.md").read_text(encoding="utf-8")
    section = text.split("### The live feed", 1)[1]
    return json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])


def post(url: str, body: bytes) -> None:
    response = httpx.post(f"{url}/webhooks/online-chat/{SECRET}", content=body)
    assert response.status_code == 200, response.text


def signed_in(url: str, who: str) -> httpx.Client:
    return signed_in_with(url, TOKENS[who])


def listed(client: httpx.Client, event_id: str) -> dict[str, Any]:
    """The event's entry in the console's event list."""
    events = client.get("/console/api/recent").json()["events"]
    return next(e for e in events if e["event"]["id"] == event_id)


def test_the_stream_carries_the_team_the_rules_read_as_the_event_list_shows_it(
    daemon: tuple[str, Any],
) -> None:
    url, publish = daemon
    anna, boris = signed_in(url, "anna"), signed_in(url, "boris")
    with (
        anna,
        boris,
        anna.stream("GET", "/console/stream") as anna_stream,
        boris.stream("GET", "/console/stream") as boris_stream,
    ):
        anna_messages = messages(opened(anna_stream.iter_lines()))
        boris_messages = messages(opened(boris_stream.iter_lines()))

        post(url, (SAMPLES / "chat_started_anonymous.json").read_bytes())
        created = next(m for m in anna_messages if m.get("event") == "created")
        like(documented(), created)  # docs/console.md's example is what the stream sends
        assert created["matched"] == ["Ring while support is online"]
        # why the other rule did not fire: Anna's console is open
        assert created["team"] == [ANNA_ONLINE]
        assert created["team"] == listed(anna, created["event_id"])["team"]

        post(url, (SAMPLES / "chat_fragment_client_message.json").read_bytes())
        message = next(m for m in anna_messages if m.get("event") == "message")
        assert message["matched"] == ["Chime on client messages"]
        assert "team" not in message  # its rule read nothing of the team
        assert "team" not in listed(anna, message["event_id"])

        # an agent's change from the console is evaluated like a webhook's event
        changed = anna.patch(f"/console/api/conversations/{CONVERSATION}/client", json=MARIA)
        assert changed.status_code == 202, changed.text
        update = next(m for m in anna_messages if m.get("event") == "client_updated")
        assert update["matched"] == ["Ring on the client's data changed while someone is online"]
        assert update["team"] == ["online: anna@example.com"]
        assert update["team"] == listed(anna, update["event_id"])["team"]

        publish(END)  # after the events: Boris's stream has had its chance to carry them
        seen = []
        for one in boris_messages:
            seen.append(one)
            if one.get("version") == "end-marker":
                break
    # Boris may not handle online-chat: neither the events nor who was online for them
    assert [m["type"] for m in seen] == ["reload"]


def test_a_fired_timers_entry_carries_the_team_its_unless_read(tmp_path: Path) -> None:
    started = json.loads((SAMPLES / "chat_started_anonymous.json").read_text())
    started["message"]["createdAt"] = int(time.time() * 1000)  # the timer counts from it
    with (
        running(tmp_path, TIMED) as (url, _),
        signed_in(url, "anna") as anna,
        anna.stream("GET", "/console/stream") as stream,
    ):
        anna_messages = messages(opened(stream.iter_lines()))
        post(url, json.dumps(started).encode())
        created = next(m for m in anna_messages if m.get("event") == "created")
        assert "team" not in created  # the rule reads the team when its timer fires
        fired = next(m for m in anna_messages if str(m.get("event_id")).startswith("timer:"))
        assert fired["matched"] == []  # Anna's console is open: the unless held
        assert fired["team"] == ["online: anna@example.com"]
        assert fired["team"] == listed(anna, fired["event_id"])["team"]


@pytest.fixture
def _offline_selenium(monkeypatch: pytest.MonkeyPatch) -> None:
    chromium_or_skip()
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium never looks anything up online


def feed_item(driver: Any, event: str) -> str:
    """The text of the feed's entry of the daemon's ``event`` (``online-chat · created``)."""
    from selenium.webdriver.common.by import By

    for item in driver.find_elements(By.CSS_SELECTOR, "#feed > li[data-type='event']"):
        if f"online-chat · {event}" in item.text:
            return str(item.text)
    return ""


def team_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("team:")]


@pytest.mark.usefixtures("_offline_selenium")
def test_the_feed_in_the_browser_says_who_was_online_for_the_rules(
    daemon: tuple[str, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    url, _ = daemon
    with chromium(tmp_path / "anna") as page:
        page.get(f"{url}/console/login")
        page.find_element(By.ID, "token").send_keys(TOKENS["anna"])
        page.find_element(By.ID, "sign-in").click()
        wait_for(
            lambda: page.find_elements(By.CSS_SELECTOR, "#connection[data-state='open']"),
            "Anna's live stream",
        )
        post(url, (SAMPLES / "chat_started_anonymous.json").read_bytes())
        post(url, (SAMPLES / "chat_fragment_client_message.json").read_bytes())

        created = wait_for(lambda: feed_item(page, "created"), "the event in Anna's feed")
        assert "matched: Ring while support is online" in created
        assert team_lines(created) == [f"team: {ANNA_ONLINE}"]
        message = wait_for(lambda: feed_item(page, "message"), "the message in Anna's feed")
        assert "matched: Chime on client messages" in message
        assert team_lines(message) == []

        # the event list (the page's first view after a reload) words it the same
        page.refresh()
        wait_for(lambda: page.execute_script("return document.body.dataset.ready"), "the page")
        listed_item = wait_for(lambda: feed_item(page, "created"), "the event list's entry")
        assert team_lines(listed_item) == team_lines(created)
        assert team_lines(wait_for(lambda: feed_item(page, "message"), "the message")) == []
