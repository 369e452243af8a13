"""What an agent may do follows the directory as it is now: access withdrawn by a reload is
withdrawn from every request at once, retries under an ``Idempotency-Key`` included."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from workspace_helpers import TOKENS, path, running, wait_for

pytest.importorskip("rulekit_chatra")


def test_a_retry_under_a_key_is_refused_once_the_channel_is_withdrawn(tmp_path: Path) -> None:
    """Anna tags a conversation under a key, then loses online-chat (a reload): sending the
    same request again answers 404, like anything else of the channel, not the answer kept
    for the key (the conversation as it was, its tags and assignee)."""
    with running("sqlite", tmp_path) as site:
        site.started()
        config = tmp_path / "rulekit.yaml"
        text = config.read_text()
        key = {"Idempotency-Key": "k-withdrawn"}
        with site.client("anna") as anna:
            tagged = anna.post(f"{path()}/tags", json={"add": ["vip"]}, headers=key)
            assert tagged.status_code == 200, tagged.text
            assert anna.post(f"{path()}/tags", json={"add": ["vip"]}, headers=key).json() == (
                tagged.json()
            )
            anna_only = "    channels: [online-chat]\n    token_sha256"
            config.write_text(text.replace(anna_only, "    channels: []\n    token_sha256", 1))
            assert site.reload()
            again = anna.post(f"{path()}/tags", json={"add": ["vip"]}, headers=key)
            assert again.status_code == 404, again.text
            assert "vip" not in again.text
            assert anna.get(path()).status_code == 404
        with site.client("admin") as admin:
            assert admin.get(path()).json()["conversation"]["tags"] == ["vip"]


def test_a_key_the_ledger_let_go_names_a_new_request_not_an_old_one(tmp_path: Path) -> None:
    """The ledger keeps keys for a day (the newest 2,000): a key it let go may name another
    request. A reply's event id stays derived from the key, so the same reply sent again is
    still one reply; another text under the key is another reply, sent, not answered as the
    first one's duplicate (and so dropped)."""
    with running("sqlite", tmp_path) as site:
        site.started()
        key = {"Idempotency-Key": "k-reused"}

        def forget() -> None:  # as the ledger does after a day, or 2,000 newer keys
            with site.daemon.store.transaction() as state:
                state.release_request_key("anna@example.com", "k-reused")

        with site.client("anna") as anna:
            first = anna.post(f"{path()}/messages", json={"text": "one"}, headers=key)
            assert first.status_code == 202, first.text
            forget()
            again = anna.post(f"{path()}/messages", json={"text": "one"}, headers=key)
            assert again.status_code == 200 and again.json()["duplicate"] is True
            assert again.json()["event_id"] == first.json()["event_id"]
            forget()
            other = anna.post(f"{path()}/messages", json={"text": "two"}, headers=key)
            assert other.status_code == 202, other.text
            assert other.json()["event_id"] != first.json()["event_id"]
            forget()
            named = anna.patch(f"{path()}/client", json={"name": "Maria"}, headers=key)
            forget()
            renamed = anna.patch(f"{path()}/client", json={"name": "Mia"}, headers=key)
            assert (named.status_code, renamed.status_code) == (202, 202), renamed.text
            assert anna.get(path()).json()["client"]["name"] == "Mia"
        sent = wait_for(lambda: len(site.chatra.sent) == 2 and site.chatra.sent, "the replies")
        assert [message["text"] for message in sent] == ["one", "two"]


def test_a_reload_that_turns_the_console_off_ends_every_access_at_once(tmp_path: Path) -> None:
    """``console: {enabled: false}`` loaded by a reload (a token leaked: the operator shuts
    the console): every console request answers 404 from then on, sessions and bearer tokens
    alike, and nothing more is changed through it; turned on again, the sessions opened
    before are over."""
    with running("sqlite", tmp_path) as site:
        site.started()
        config = tmp_path / "rulekit.yaml"
        text = config.read_text()
        with httpx.Client(base_url=site.url, timeout=10) as browser:
            signed_in = browser.post(
                "/console/login",
                data={"token": TOKENS["anna"]},
                headers={"Origin": site.url},
            )
            assert signed_in.status_code == 303
            assert browser.get("/console/api/me").status_code == 200
            config.write_text(text.replace("console:\n", "console:\n  enabled: false\n", 1))
            assert site.reload()
            assert browser.get("/console/api/me").status_code == 404
            assert browser.get("/console/").status_code == 404
            with site.client("anna") as anna:
                assert anna.get("conversations").status_code == 404
                assert anna.get(path()).status_code == 404
                sent = anna.post(f"{path()}/messages", json={"text": "still here?"})
                assert sent.status_code == 404
            config.write_text(text)
            assert site.reload()
            assert browser.get("/console/api/me").status_code == 401
        assert site.events("agent_replied") == []
