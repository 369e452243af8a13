"""A change of the client's data that the channel does not keep is refused, not dropped later.

A Chatra channel keeps of a client only the fields its ``client_data`` takes (the documented
example leaves ``notes`` out): every webhook rebuilds the record without the others. A change
of such a field was answered 202, saved, and gone from rulekit's record at the client's next
message (a name, email or phone leaving with a ``client_updated`` event the agent never made).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from workspace_helpers import SAMPLES, SECRET, VISITOR, Workspace, path, running, wait_for

pytest.importorskip("rulekit_chatra")


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    with running("sqlite", tmp_path, "client_data: [name, email, phone, ip, city]") as workspace:
        yield workspace


def test_a_field_the_channel_does_not_keep_is_refused(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        refused = anna.patch(f"{path()}/client", json={"notes": "Wants the blue kettle"})
        assert refused.status_code == 409, refused.text
        assert "client_data" in refused.json()["error"]
        assert "notes" in refused.json()["error"]
        both = anna.patch(f"{path()}/client", json={"name": "Maria", "notes": "VIP"})
        assert both.status_code == 409, both.text
        kept = anna.patch(f"{path()}/client", json={"name": "Maria Lopez"})
        assert kept.status_code == 202, kept.text
        wait_for(lambda: workspace.job(kept.json()["job_id"]).status == "done", "the change")
    assert workspace.chatra.client_updates == [(VISITOR, {"name": "Maria Lopez"})]
    # the client's next message keeps what the channel keeps
    body = (SAMPLES / "chat_fragment_client_message.json").read_bytes()
    posted = httpx.post(f"{workspace.url}/webhooks/online-chat/{SECRET}", content=body)
    assert posted.status_code == 200
    with workspace.client("anna") as anna:
        wait_for(lambda: len(anna.get(path()).json()["thread"]) == 2, "the client's message")
        assert anna.get(path()).json()["client"]["name"] == "Maria Lopez"
    assert [r.data["origin"] for r in workspace.events("client_updated")] == ["console"]
