"""A person's assignment made while a rule's assign waits in the conversation's lane stays: an
autoreply ahead of it waits out Chatra's 429, and meanwhile Anna gives the chat to Carla from
the console, or Carla answers the client in Chatra's own app (taking the chat); the rule's
assign then changes nothing, emits no ``assigned`` event, and its recorded outcome and log line
say why. The assign used to read the conversation when its turn came and give the chat to the
rule's pick over the person's choice."""

from __future__ import annotations

import json
import logging

import httpx
import pytest
from workspace_helpers import (
    CONVERSATION,
    RULES,
    SAMPLES,
    SECRET,
    path,
    running,
    wait_for,
    write,
)

pytest.importorskip("rulekit_chatra")

GREET_AND_ASSIGN = """
- name: Greet and assign
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello! Someone will be with you shortly.", as_agent: carla@example.com}
    - assign: {group: support, strategy: round_robin}
"""
CREATED = "online-chat:msg:Acb7t59BkCvoXi6SS"
SLOW = pytest.mark.slow  # the PostgreSQL store's check is also held to a race in test_assign_*


def carla_answers_in_chatra(workspace) -> str:
    """Carla's reply from Chatra's app (the sample's, by Carla): she takes the chat."""
    body = json.loads((SAMPLES / "chat_fragment_agent_reply_from_app.json").read_text())
    body["agents"] = [{"id": "carla-in-chatra", "name": "Carla", "email": "carla@example.com"}]
    body["messages"][0]["agentId"] = "carla-in-chatra"
    url = f"{workspace.url}/webhooks/online-chat/{SECRET}"
    assert httpx.post(url, json=body).status_code == 200
    workspace.processed(f"online-chat:msg:{body['messages'][0]['id']}")
    return "in the channel"


def anna_gives_it_to_carla(workspace) -> str:
    with workspace.client("anna") as anna:
        answer = anna.post(f"{path()}/assign", json={"agent": "carla@example.com"})
        assert answer.status_code == 200, answer.text
    return "from the console"


@pytest.mark.parametrize(
    ("storage", "person"),
    [
        ("sqlite", anna_gives_it_to_carla),
        ("sqlite", carla_answers_in_chatra),
        pytest.param("postgresql", anna_gives_it_to_carla, marks=SLOW),
        pytest.param("postgresql", carla_answers_in_chatra, marks=SLOW),
    ],
    ids=["sqlite-console", "sqlite-chatra", "postgresql-console", "postgresql-chatra"],
)
def test_a_persons_assignment_made_while_the_rules_assign_waits_stays(
    storage, person, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="rulekit.dispatcher")
    with running(storage, tmp_path) as workspace:
        write(tmp_path / "rules.d" / "rules.yaml", RULES + GREET_AND_ASSIGN)
        assert workspace.reload()
        workspace.chatra.rate_limit(retry_after=1)  # the autoreply's first call gets a 429
        workspace.webhook("chat_started_anonymous.json")
        workspace.processed(CREATED)

        def jobs() -> dict:
            return {job.action: job for job in workspace.jobs_of(CREATED)}

        wait_for(lambda: jobs()["autoreply"].attempts >= 1, "the autoreply's first attempt")
        assert jobs()["assign"].status == "pending"  # behind the autoreply in the lane
        where = person(workspace)

        wait_for(lambda: jobs()["assign"].status == "done", "the rule's assign", timeout=30)
        assert jobs()["autoreply"].status == "done"
        with workspace.daemon.store.reading() as state:
            _, conversation = state.find_conversation("online-chat", CONVERSATION)
        assert conversation.assignee == "carla@example.com"  # the rule's pick was Anna
        assert conversation.assigned_by == ("agent" if where == "from the console" else "channel")
        result = jobs()["assign"].result
        assert result["kept"] is True and result["assigned"] is None
        assert f"{where} after the event" in result["reason"]
        # none of the rule's: the console's own assignment made one
        assert not [e for e in workspace.events("assigned") if e.event_id.startswith(CREATED)]
        [line] = [r for r in caplog.records if r.getMessage().endswith("assign: done")]
        assert line.fields["reason"] == result["reason"]  # type: ignore[attr-defined]
