"""Sounds addressed to ``everyone`` over a real daemon's live stream: a webhook's rule rings the
agents who may handle the event's channel, and no agent without access to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_helpers import daemon_with_feed, messages, sha, signed_in_with
from scaffold import REPO

pytest.importorskip("rulekit_chatra")

SECRET = "audience-secret-0123456789"
TOKENS = {"anna": "anna-audience-token-0123", "boris": "boris-audience-token-0123"}
END = {"type": "reload", "ok": True, "version": "end-marker"}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    rules = """
        - name: Ring everyone on new chats
          on: {channel: online-chat, event: created}
          do:
            - play_sound: {sound: bell, to: everyone}
        """
    config = f"""
        rules: rules.d
        storage: sqlite:///rulekit.sqlite3
        channels:
          online-chat: {{provider: chatra, webhook_secret: {SECRET}, default_group: support}}
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
    with daemon_with_feed(tmp_path, rules, config) as found:
        yield found


def signed_in(url: str, who: str) -> httpx.Client:
    return signed_in_with(url, TOKENS[who])


def test_a_sound_for_everyone_rings_only_the_agents_of_its_channel(
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
        anna_messages = messages(anna_stream.iter_lines())
        boris_messages = messages(boris_stream.iter_lines())
        body = (REPO / "examples" / "chatra" / "chat_started_anonymous.json").read_bytes()
        response = httpx.post(f"{url}/webhooks/online-chat/{SECRET}", content=body)
        assert response.status_code == 200, response.text

        sound = next(m for m in anna_messages if m["type"] == "sound")
        assert sound["sound"] == "bell" and sound["to"] == ["*"]
        publish(END)  # after the sound: Boris's stream has had its chance to carry it
        seen = []
        for message in boris_messages:
            seen.append(message)
            if message.get("version") == "end-marker":
                break
    assert [m["type"] for m in seen] == ["reload"]  # no sound, no event of online-chat
