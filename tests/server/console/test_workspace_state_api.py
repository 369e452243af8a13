"""The workspace API's changes of a conversation's state (assignee, tags, priority) against a
running daemon, on SQLite and PostgreSQL: made through the actions rules use, seen by rules as
``updated`` events of origin ``console``, refused where they must be."""

from __future__ import annotations

import logging

import httpx
import pytest
from workspace_helpers import CONVERSATION, TOKENS, Workspace, path, wait_for, workspace

from rulekit.runtime.logs import log_id

pytest.importorskip("rulekit_chatra")

__all__ = ["workspace"]

WRITES = ["assign", "tags", "priority"]


def matched(record) -> list[str]:
    return [rule["name"] for rule in record.trace["rules"] if rule.get("matched")]


@pytest.mark.parametrize("endpoint", WRITES)
def test_state_changes_need_a_session_or_token(workspace: Workspace, endpoint: str) -> None:
    workspace.started()
    with workspace.client() as api:
        assert api.post(f"{path()}/{endpoint}", json={}).status_code == 401
    with workspace.client("boris") as boris:  # not his channel: as if it did not exist
        response = boris.post(f"{path()}/{endpoint}", json={"agent": "anna@example.com"})
        assert response.status_code == 404
    with workspace.client("anna") as anna:
        assert anna.post(f"{path('online-chat:nobody')}/{endpoint}", json={}).status_code == 404


def test_an_assignment_is_recorded_as_the_agents_and_seen_by_the_list(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.started()
    caplog.set_level(logging.INFO, logger="rulekit.console")
    with workspace.client("anna") as anna:
        response = anna.post(f"{path()}/assign", json={"agent": "Anna@Example.com"})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["conversation"]["assignee"] == "anna@example.com"
        assert answer["changed"]["assignee"] == {"from": None, "to": "anna@example.com"}
        assert answer["changed"]["tags"] == {"added": [], "removed": []}  # as rules see it
        mine = anna.get("conversations", params={"view": "mine"}).json()["conversations"]
        assert [c["id"] for c in mine] == [CONVERSATION]
        # the same again changes nothing and records nothing
        again = anna.post(f"{path()}/assign", json={"agent": "anna@example.com"}).json()
        assert again["event_id"] is None and again["changed"] == {}
    updated = workspace.event(answer["event_id"])
    assert updated.event == "updated" and updated.data["origin"] == "console"
    assert updated.data["agent"]["email"] == "anna@example.com"
    assert updated.data["changed"]["assignee"]["to"] == "anna@example.com"
    (assigned,) = workspace.events("assigned")
    assert assigned.data["origin"] == "console"
    assert len(workspace.events("updated")) == 1
    (line,) = [r for r in caplog.records if r.getMessage() == "console: assigned a conversation"]
    assert line.fields["agent"] == "anna@example.com"  # type: ignore[attr-defined]
    # the ids hold a client's (a Telegram chat's): the line names them by their log_id
    assert line.fields["event"] == log_id(answer["event_id"])  # type: ignore[attr-defined]


def test_assignments_follow_the_directory(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        boris = anna.post(f"{path()}/assign", json={"agent": "Boris@example.com"})
        nobody = anna.post(f"{path()}/assign", json={"agent": "nobody@example.com"})
        # Boris works on another channel: Anna may not see him, so she is told no more of
        # him than of an email no agent has (trying emails enumerates nobody)
        assert (boris.status_code, boris.json()) == (
            409,
            {"error": "agent boris@example.com has no access to channel 'online-chat'"},
        )
        assert (nobody.status_code, nobody.json()) == (
            409,
            {"error": "agent nobody@example.com has no access to channel 'online-chat'"},
        )
        for body in ({}, {"agent": 5}, {"agent": "anna@example.com", "to": "x"}):
            assert anna.post(f"{path()}/assign", json=body).status_code == 400, body
        # a group: an agent of it with access to the channel, round robin as the action does
        picked = anna.post(f"{path()}/assign", json={"group": "support"}).json()
        assert picked["conversation"]["assignee"] in ("anna@example.com", "carla@example.com")
        assert picked["conversation"]["group"] == "support"
    with workspace.client("admin") as admin:  # who sees everyone is told which it is
        nobody = admin.post(f"{path()}/assign", json={"agent": "nobody@example.com"})
        assert "not in the agent directory" in nobody.json()["error"]
    assert workspace.events("assigned") and not workspace.chatra.requests


def test_tags_are_changed_and_rules_react_to_the_agents_change(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        response = anna.post(f"{path()}/tags", json={"add": ["vip", "kettle"]})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["conversation"]["tags"] == ["vip", "kettle"]
        record = workspace.event(answer["event_id"])
        assert record.data["origin"] == "console"
        assert matched(record) == ["VIP chats are urgent"]
        (job,) = workspace.jobs_of(record.event_id)
        assert job.action == "set"
        wait_for(lambda: workspace.job(job.id).status == "done", "the rule's set")
        view = anna.get(path()).json()
        assert view["conversation"]["priority"] == "urgent"
        removed = anna.post(f"{path()}/tags", json={"remove": ["kettle"]}).json()
        assert removed["conversation"]["tags"] == ["vip"]
        assert removed["changed"]["tags"]["removed"] == ["kettle"]
        tagged = anna.get("conversations", params={"tag": "vip"}).json()["conversations"]
        assert [c["id"] for c in tagged] == [CONVERSATION]
        anna.post(f"{path()}/tags", json={"remove": ["vip"]})
        assert anna.get(path()).json()["conversation"]["tags"] == []  # not the events' older tags
        for body in ({}, {"add": "vip"}, {"add": [""]}, {"add": ["x" * 65]}, {"drop": ["vip"]}):
            assert anna.post(f"{path()}/tags", json=body).status_code == 400, body


def test_the_priority_is_set_and_checked(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("admin") as admin:  # the admin may change state (not reply)
        response = admin.post(f"{path()}/priority", json={"priority": "high"})
        assert response.status_code == 200, response.text
        assert response.json()["changed"]["priority"] == {"from": None, "to": "high"}
        record = workspace.event(response.json()["event_id"])
        assert record.data["origin"] == "console" and record.data["agent"]["email"] is None
    with workspace.client("anna") as anna:
        for body in ({}, {"priority": "soon"}, {"priority": "high", "fields": {"a": 1}}):
            assert anna.post(f"{path()}/priority", json=body).status_code == 400, body
        assert anna.get(path()).json()["conversation"]["priority"] == "high"


def test_cookie_state_changes_must_come_from_the_consoles_own_page(workspace: Workspace) -> None:
    workspace.started()
    login = httpx.post(f"{workspace.url}/console/login", data={"token": TOKENS["anna"]})
    endpoint = f"{workspace.url}/console/api/{path()}/tags"
    with httpx.Client(cookies=login.cookies, timeout=10) as browser:
        other_site = browser.post(
            endpoint, json={"add": ["x"]}, headers={"Origin": "https://evil.example"}
        )
        own_page = browser.post(endpoint, json={"add": ["x"]}, headers={"Origin": workspace.url})
    assert (other_site.status_code, own_page.status_code) == (403, 200)


def test_what_an_agent_clears_stays_cleared_in_the_view(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        anna.patch(f"{path()}/client", json={"email": "maria@example.com"})
        assert anna.get(path()).json()["client"]["email"] == "maria@example.com"
        anna.patch(f"{path()}/client", json={"email": None})
        assert anna.get(path()).json()["client"]["email"] is None
