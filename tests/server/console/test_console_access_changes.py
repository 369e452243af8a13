"""What an agent may do follows the directory as it is now: access withdrawn by a reload is
withdrawn from every request at once, retries under an ``Idempotency-Key`` included."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace_helpers import path, running

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
