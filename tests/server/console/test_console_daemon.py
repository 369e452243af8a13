"""End to end: a real Chatra webhook posted to a running daemon (``rulekit run``'s app on
uvicorn, SQLite, the bundled Chatra plugin) shows in the console in headless Chromium, and the
rule's sound plays for the agent it names and not for another agent of the same channel."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser import chromium, chromium_or_skip, wait_for
from console_helpers import serve
from scaffold import REPO, write

pytest.importorskip("rulekit_chatra")

SECRET = "console-e2e-secret-0123456789"
TOKENS = {"anna": "anna-e2e-token-0123456789", "boris": "boris-e2e-token-0123456789"}
SAMPLE = REPO / "examples" / "chatra" / "chat_started_anonymous.json"


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture(autouse=True)
def _offline_selenium(monkeypatch: pytest.MonkeyPatch) -> None:
    chromium_or_skip()
    monkeypatch.setenv("SE_OFFLINE", "true")


@pytest.fixture
def daemon_url(tmp_path: Path) -> Iterator[str]:
    from rulekit.server.daemon import Daemon

    write(
        tmp_path / "rules.d" / "rules.yaml",
        """
        - name: Ring Anna on new chats
          on: {channel: online-chat, event: created}
          do:
            - play_sound: {sound: bell, to: anna@example.com}
        """,
    )
    config = write(
        tmp_path / "rulekit.yaml",
        f"""
        rules: rules.d
        storage: sqlite:///rulekit.sqlite3
        channels:
          online-chat:
            provider: chatra
            webhook_secret: {SECRET}
            default_group: support
        groups: [support]
        agents:
          - email: anna@example.com
            groups: [support]
            channels: [online-chat]
            token_sha256: {sha(TOKENS["anna"])}
          - email: boris@example.com
            groups: [support]
            channels: [online-chat]
            token_sha256: {sha(TOKENS["boris"])}
        dispatcher: {{backoff_base: 0.05, backoff_max: 1.0}}
        """,
    )
    daemon = Daemon(config, watch=False)
    with serve(daemon.app) as (url, _):
        yield url


def signed_in(driver: Any, url: str, who: str) -> Any:
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/console/login")
    driver.find_element(By.ID, "token").send_keys(TOKENS[who])
    driver.find_element(By.ID, "sign-in").click()
    # find_elements, not find_element: until the console has loaded, this is the sign-in page
    wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, "#connection[data-state='open']"),
        f"{who}'s live stream",
    )
    driver.find_element(By.ID, "enable-sound").click()
    return driver


def test_a_posted_webhook_shows_in_the_feed_and_rings_its_agent(
    daemon_url: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with (
        chromium(tmp_path / "anna") as anna_browser,
        chromium(tmp_path / "boris") as boris_browser,
    ):
        anna = signed_in(anna_browser, daemon_url, "anna")
        boris = signed_in(boris_browser, daemon_url, "boris")

        response = httpx.post(
            f"{daemon_url}/webhooks/online-chat/{SECRET}", content=SAMPLE.read_bytes()
        )
        assert response.status_code == 200, response.text

        def feed(driver: Any) -> str:
            return driver.find_element(By.ID, "feed").text

        wait_for(lambda: "online-chat · created" in feed(anna), "the event in Anna's feed")
        wait_for(
            lambda: anna.execute_script("return window.__rulekitPlayed.length"),
            "Anna's bell to start playing",
        )
        played = anna.execute_script("return window.__rulekitPlayed")
        assert [p["sound"] for p in played] == ["bell"]
        # Boris handles the channel too: he sees the event and the action, but hears nothing
        wait_for(lambda: "play_sound" in feed(boris), "the action in Boris's feed")
        assert "online-chat · created" in feed(boris)
        assert boris.execute_script("return window.__rulekitPlayed") == []

        # the conversation view shows the client panel from what the webhook carried
        anna.find_element(By.CSS_SELECTOR, "#feed button.open-conversation").click()
        panel = wait_for(
            lambda: (
                (text := anna.find_element(By.ID, "client-panel").text)
                and "Berlin" in text
                and text
            ),
            "the client panel",
        )
        for shown in ("Visitor 4p40", "203.0.113.54", "Chrome 122", "Windows 10", "Berlin"):
            assert shown in panel
