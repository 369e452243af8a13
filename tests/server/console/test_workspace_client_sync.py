"""An agent's change of the client's data is not undone by the channel's webhooks that still
carry the old value while the change is on its way to the service.

Chatra's webhooks carry what Chatra knows of the visitor. Until the change's ``PUT
/clients/{id}`` has gone through (Chatra slow, rate-limited, down, or the conversation's
earlier jobs first), each webhook still carries the old value: it was taken for a change by
the client, written over the agent's in rulekit's record and fired the ``client_updated``
rules (a name changed back), and again when Chatra's next webhook carried the agent's value."""

from __future__ import annotations

import json

import httpx
import pytest
from workspace_helpers import SECRET, VISITOR, Workspace, path, wait_for, workspace

pytest.importorskip("rulekit_chatra")

__all__ = ["workspace"]


def fragment(workspace: Workspace, message_id: str, name: str) -> None:
    """The visitor writes; Chatra's webhook carries the name Chatra knows."""
    body = {
        "eventName": "chatFragment",
        "messages": [
            {"id": message_id, "type": "client", "text": "hello", "createdAt": 1741943656000}
        ],
        "client": {"id": VISITOR, "chatId": "Kw2twCpXPKBFtP87S", "info": {"name": name}},
    }
    posted = httpx.post(
        f"{workspace.url}/webhooks/online-chat/{SECRET}", content=json.dumps(body).encode()
    )
    assert posted.status_code == 200, posted.text
    workspace.processed(f"online-chat:msg:{message_id}")


@pytest.mark.slow
def test_a_webhook_with_the_old_value_does_not_undo_a_change_on_its_way(
    workspace: Workspace,
) -> None:
    workspace.started()
    fragment(workspace, "m1", "Mary Lopz")
    workspace.chatra.hang(3)  # Chatra takes its time with the change
    with workspace.client("anna") as anna:
        changed = anna.patch(f"{path()}/client", json={"name": "Maria Lopez"})
        assert changed.status_code == 202, changed.text
        wait_for(lambda: workspace.chatra.client_updates, "the change on its way")
        fragment(workspace, "m2", "Mary Lopz")  # Chatra does not know the change yet
        assert workspace.job(changed.json()["job_id"]).status == "pending"
        assert anna.get(path()).json()["client"]["name"] == "Maria Lopez"
        updates = [
            (r.data["origin"], r.data["client"]["name"]) for r in workspace.events("client_updated")
        ]
        assert sorted(updates) == [("channel", "Mary Lopz"), ("console", "Maria Lopez")]
        # once Chatra has it, what its webhooks carry is the client's again
        wait_for(lambda: workspace.job(changed.json()["job_id"]).status == "done", "the change")
        fragment(workspace, "m3", "Maria L.")
        assert anna.get(path()).json()["client"]["name"] == "Maria L."
    assert workspace.events("client_updated")[0].data["client"]["name"] == "Maria L."
