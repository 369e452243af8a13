"""The workspace API against a running daemon with the fake Chatra, on SQLite and PostgreSQL:
every endpoint, who may use it, and what reaches Chatra."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from workspace_helpers import (
    CONVERSATION,
    SECRET,
    TOKENS,
    VISITOR,
    Workspace,
    path,
    wait_for,
    workspace,
)

pytest.importorskip("rulekit_chatra")

__all__ = ["workspace"]

ENDPOINTS = [
    ("GET", "conversations"),
    ("GET", path()),
    ("GET", f"conversations/online-chat/{CONVERSATION}"),
    ("POST", f"{path()}/messages"),
    ("PATCH", f"{path()}/client"),
    ("GET", "dead-letters"),
    ("POST", "dead-letters/1/retry"),
    ("GET", "set-aside"),
    ("POST", "set-aside/1/requeue"),
]


def matched(record: Any) -> list[str]:
    return [rule["name"] for rule in record.trace["rules"] if rule.get("matched")]


def echo_of(sent: dict[str, Any], message_id: str) -> bytes:
    """Chatra's webhook carrying rulekit's own reply back, and a client's answer after it."""
    return json.dumps(
        {
            "eventName": "chatFragment",
            "messages": [
                {
                    "id": message_id,
                    "type": "agent",
                    "text": sent["text"],
                    "createdAt": 1741943615000,
                    "agentName": sent["agentName"],
                    "receivedFrom": sent["receivedFrom"],
                },
                {"id": "answer-1", "type": "client", "text": "Thanks!", "createdAt": 1741943656000},
            ],
            "client": {"id": VISITOR, "chatId": "Kw2twCpXPKBFtP87S"},
        }
    ).encode()


# who may ask -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "endpoint"), ENDPOINTS)
def test_requests_without_a_session_or_token_get_401(
    workspace: Workspace, method: str, endpoint: str
) -> None:
    with workspace.client() as api:
        assert api.request(method, endpoint, json={}).status_code == 401
        wrong = {"Authorization": "Bearer not-a-token"}
        assert api.request(method, endpoint, json={}, headers=wrong).status_code == 401


# reading ---------------------------------------------------------------------------------------
def test_the_list_holds_the_conversations_of_the_agents_channels(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna, workspace.client("boris") as boris:
        answer = anna.get("conversations").json()
        assert answer["next_cursor"] is None
        (entry,) = answer["conversations"]
        assert entry["id"] == CONVERSATION
        assert entry["channel"] == "online-chat"
        assert entry["client"]["display_name"] == "Visitor 4p40"
        assert entry["conversation"]["status"] == "open"
        assert boris.get("conversations").json() == {"conversations": [], "next_cursor": None}
        assert anna.get("conversations", params={"view": "mine"}).json()["conversations"] == []
        assert (
            len(anna.get("conversations", params={"view": "unassigned"}).json()["conversations"])
            == 1
        )
        assert anna.get("conversations", params={"status": "closed"}).json()["conversations"] == []
        assert len(anna.get("conversations", params={"q": "4P40"}).json()["conversations"]) == 1
        assert anna.get("conversations", params={"q": "nobody"}).json()["conversations"] == []
        for bad in ({"view": "theirs"}, {"status": "gone"}, {"cursor": "xyz"}, {"limit": "0"}):
            response = anna.get("conversations", params=bad)
            assert response.status_code == 400, bad
            assert response.json()["error"]
    with workspace.client("admin") as admin:
        assert len(admin.get("conversations").json()["conversations"]) == 1
        assert admin.get("conversations", params={"view": "mine"}).status_code == 400


def test_the_list_pages_newest_activity_first(workspace: Workspace) -> None:
    workspace.started()
    workspace.webhook("chat_transcript_with_email.json")
    other = "online-chat:1lr3pe29gd8afpk054nzdkyayq3s195jmsnd8dud"
    wait_for(lambda: workspace.events("closed"), "the transcript")
    with workspace.client("anna") as anna:
        first = anna.get("conversations", params={"limit": 1}).json()
        assert [c["id"] for c in first["conversations"]] == [other]
        assert first["next_cursor"]
        second = anna.get("conversations", params={"limit": 1, "cursor": first["next_cursor"]})
        assert [c["id"] for c in second.json()["conversations"]] == [CONVERSATION]
        workspace.webhook("chat_fragment_client_message.json")  # new activity: back on top
        workspace.processed("online-chat:msg:mZBJAHsfeJshXhTRG")
        top = anna.get("conversations", params={"limit": 1}).json()["conversations"]
        assert [c["id"] for c in top] == [CONVERSATION]


def test_the_conversation_view_has_the_client_panel_and_thread(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        view = anna.get(path()).json()
        alias = anna.get(f"conversations/online-chat/{CONVERSATION}").json()
    assert view == alias
    assert view["id"] == CONVERSATION and view["channel"] == "online-chat"
    assert view["client"]["city"] == "Berlin" and view["client"]["ip"] == "203.0.113.54"
    (message,) = view["thread"]
    assert message["author"] == "client"
    assert message["text"] == "Hi, is the blue kettle in stock?"
    assert message["at"].startswith("2025-03-14T09:12:05")
    assert [e["event"]["event"] for e in view["events"]] == ["created"]
    assert view["truncated"] is False


def test_conversations_of_other_channels_are_not_found(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("boris") as boris:
        assert boris.get(path()).status_code == 404
        assert boris.get(f"conversations/online-chat/{CONVERSATION}").status_code == 404
        assert boris.post(f"{path()}/messages", json={"text": "hi"}).status_code == 404
        assert boris.patch(f"{path()}/client", json={"name": "X"}).status_code == 404
    with workspace.client("anna") as anna:
        assert anna.get(path("online-chat:nobody")).status_code == 404
    assert workspace.chatra.sent == [] and workspace.chatra.client_updates == []


# replying ----------------------------------------------------------------------------------------
def test_a_reply_is_sent_as_the_agent_and_its_echo_fires_nothing(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        response = anna.post(f"{path()}/messages", json={"text": "Yes, it is in stock."})
        assert response.status_code == 202, response.text
        answer = response.json()
    wait_for(lambda: workspace.job(answer["job_id"]).status == "done", "the reply's job")
    (sent,) = workspace.chatra.sent
    assert sent["clientId"] == VISITOR
    assert sent["text"] == "Yes, it is in stock."
    assert (sent["agentEmail"], sent["agentName"]) == ("anna@example.com", "Anna Weber")
    record = workspace.event(answer["event_id"])
    assert record.event == "agent_replied"
    assert record.data["origin"] == "console"
    assert record.data["agent"]["email"] == "anna@example.com"
    assert record.data["message"]["text"] == "Yes, it is in stock."
    assert matched(record) == ["Count agent replies"]

    message_id = workspace.job(answer["job_id"]).result["id"]
    body = echo_of(sent, message_id)
    posted = httpx.post(f"{workspace.url}/webhooks/online-chat/{SECRET}", content=body)
    assert posted.status_code == 200
    workspace.processed("online-chat:msg:answer-1")
    assert [r.event_id for r in workspace.events("agent_replied")] == [answer["event_id"]]

    with workspace.client("anna") as anna:
        thread = anna.get(path()).json()["thread"]
    assert [(m["author"], m["text"]) for m in thread] == [
        ("client", "Hi, is the blue kettle in stock?"),
        ("agent", "Yes, it is in stock."),
        ("client", "Thanks!"),
    ]
    assert thread[1]["delivery"]["status"] == "done"
    assert thread[1]["origin"] == "console" and thread[1]["agent"] == "anna@example.com"


def test_a_reply_failing_for_a_while_is_retried(workspace: Workspace) -> None:
    workspace.started()
    workspace.chatra.fail(503)
    with workspace.client("anna") as anna:
        job_id = anna.post(f"{path()}/messages", json={"text": "One moment"}).json()["job_id"]
    wait_for(lambda: workspace.job(job_id).status == "done", "the retried reply")
    assert workspace.job(job_id).attempts == 2
    assert [s["text"] for s in workspace.chatra.sent] == ["One moment", "One moment"]


def test_the_same_idempotency_key_sends_one_reply(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        key = {"Idempotency-Key": "typed-once"}
        first = anna.post(f"{path()}/messages", json={"text": "Hello"}, headers=key)
        again = anna.post(f"{path()}/messages", json={"text": "Hello"}, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["duplicate"] is True
    assert again.json()["event_id"] == first.json()["event_id"]
    wait_for(lambda: workspace.job(first.json()["job_id"]).status == "done", "the reply")
    assert len(workspace.chatra.sent) == 1


def test_replies_are_refused_when_they_must_be(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("admin") as admin:
        response = admin.post(f"{path()}/messages", json={"text": "hi"})
        assert response.status_code == 403
        assert "agents reply as themselves" in response.json()["error"]
    with workspace.client("anna") as anna:
        for body in ({}, {"text": ""}, {"text": 5}, {"text": "x" * 5001}, {"text": "a", "to": 1}):
            assert anna.post(f"{path()}/messages", json=body).status_code == 400, body
        assert anna.post(f"{path()}/messages", content=b"[1]").status_code == 400
        assert anna.post(f"{path()}/messages", content=b"x" * 70_000).status_code == 413
    assert workspace.chatra.sent == []


def test_cookie_writes_must_come_from_the_consoles_own_page(workspace: Workspace) -> None:
    workspace.started()
    login = httpx.post(f"{workspace.url}/console/login", data={"token": TOKENS["anna"]})
    cookies = login.cookies
    endpoint = f"{workspace.url}/console/api/{path()}/messages"
    with httpx.Client(cookies=cookies, timeout=10) as browser:
        other_site = browser.post(
            endpoint, json={"text": "x"}, headers={"Origin": "https://evil.example"}
        )
        as_form = browser.post(endpoint, data={"text": "x"})
        # the same host on another scheme or port is another site: the whole origin must match
        scheme, _, port = workspace.url.rpartition(":")
        elsewhere = [
            browser.post(endpoint, json={"text": "x"}, headers={"Origin": origin}).status_code
            for origin in (
                workspace.url.replace("http://", "https://"),
                f"{scheme}:{int(port) + 1}",
            )
        ]
        own_page = browser.post(
            endpoint, json={"text": "From the page"}, headers={"Origin": workspace.url}
        )
    assert (other_site.status_code, as_form.status_code, elsewhere) == (403, 403, [403, 403])
    assert own_page.status_code == 202
    wait_for(lambda: workspace.chatra.sent, "the reply")
    assert [s["text"] for s in workspace.chatra.sent] == ["From the page"]


# the client's data -----------------------------------------------------------------------------
def test_client_data_is_changed_in_chatra_and_seen_by_rules(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        response = anna.patch(
            f"{path()}/client", json={"name": "Maria Lopez", "email": "maria@example.com"}
        )
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["changed"] == ["email", "name"]
        assert answer["client"]["name"] == "Maria Lopez"
        wait_for(lambda: workspace.job(answer["job_id"]).status == "done", "the change's job")
        assert workspace.chatra.client_updates == [
            (VISITOR, {"email": "maria@example.com", "name": "Maria Lopez"})
        ]
        assert workspace.chatra.clients[VISITOR]["name"] == "Maria Lopez"
        record = workspace.event(answer["event_id"])
        assert record.event == "client_updated" and record.data["origin"] == "console"
        assert record.data["agent"]["email"] == "anna@example.com"
        assert matched(record) == ["Welcome named clients"]
        assert anna.get(path()).json()["client"]["name"] == "Maria Lopez"
        found = anna.get("conversations", params={"q": "maria@"}).json()["conversations"]
        assert [c["id"] for c in found] == [CONVERSATION]
        # the same again changes nothing and emits nothing
        same = anna.patch(f"{path()}/client", json={"name": "Maria Lopez"}).json()
        assert same["changed"] == [] and same["event_id"] is None
        for body in ({}, {"age": "3"}, {"email": "not-an-address"}, {"name": 3}):
            assert anna.patch(f"{path()}/client", json=body).status_code == 400, body
    assert len(workspace.events("client_updated")) == 1


# dead letters and set-aside webhooks -------------------------------------------------------------
def test_a_dead_reply_is_listed_and_retried(workspace: Workspace) -> None:
    workspace.started()
    workspace.chatra.fail(400, "client not found")
    with workspace.client("anna") as anna:
        job_id = anna.post(f"{path()}/messages", json={"text": "Again"}).json()["job_id"]
        wait_for(lambda: workspace.job(job_id).status == "dead", "the dead letter")
        (dead,) = anna.get("dead-letters").json()["dead_letters"]
        assert dead["job_id"] == job_id and dead["channel"] == "online-chat"
        assert "client not found" in dead["error"]
        with workspace.client("boris") as boris:
            assert boris.get("dead-letters").json() == {"dead_letters": []}
            assert boris.post(f"dead-letters/{job_id}/retry").status_code == 404
        retried = anna.post(f"dead-letters/{job_id}/retry")
        assert retried.status_code == 200
        assert retried.json()["dead_letter"]["status"] == "pending"
        wait_for(lambda: workspace.job(job_id).status == "done", "the retried reply")
        assert anna.post(f"dead-letters/{job_id}/retry").status_code == 409
        assert anna.post("dead-letters/999999/retry").status_code == 404
        assert anna.post("dead-letters/abc/retry").status_code == 404
    assert [s["text"] for s in workspace.chatra.sent] == ["Again", "Again"]


def test_a_set_aside_webhook_is_listed_and_requeued(workspace: Workspace) -> None:
    body = b'{"eventName": "chatFragment", "messages": []}'
    posted = httpx.post(f"{workspace.url}/webhooks/online-chat/{SECRET}", content=body)
    assert posted.status_code == 200
    with workspace.client("anna") as anna, workspace.client("admin") as admin:
        (item,) = wait_for(lambda: anna.get("set-aside").json()["set_aside"], "the set-aside")
        assert item["channel"] == "online-chat" and item["error"]
        assert item["body_preview"] == body.decode()
        with workspace.client("boris") as boris:
            assert boris.get("set-aside").json() == {"set_aside": []}
            assert boris.post(f"set-aside/{item['inbox_id']}/requeue").status_code == 404
        requeued = admin.post(f"set-aside/{item['inbox_id']}/requeue")
        assert requeued.status_code == 200
        assert requeued.json()["set_aside"]["status"] == "pending"
        # still not a Chatra body: set aside once more, after a second try
        wait_for(
            lambda: [i["attempts"] for i in anna.get("set-aside").json()["set_aside"]] == [2],
            "the second try",
        )
        assert anna.post("set-aside/999999/requeue").status_code == 404


def test_a_reply_longer_than_chatra_takes_is_refused_not_cut(workspace: Workspace) -> None:
    """Chatra takes 5,000 UTF-16 code units: 2,501 emoji are 5,002 of them. Sent on, the reply
    would reach the client cut short while the agent was told it was sent; the agent is told
    at once instead, and can shorten it."""
    workspace.started()
    with workspace.client("anna") as anna:
        key = {"Idempotency-Key": "long-one"}
        refused = anna.post(f"{path()}/messages", json={"text": "😀" * 2501}, headers=key)
        assert refused.status_code == 400, refused.text
        assert "5002 characters" in refused.json()["error"]
        assert "at most 5000" in refused.json()["error"]
        # a refusal leaves the key free, and a reply that fits is sent whole
        fits = anna.post(f"{path()}/messages", json={"text": "😀" * 2500}, headers=key)
        assert fits.status_code == 202, fits.text
    wait_for(lambda: workspace.job(fits.json()["job_id"]).status == "done", "the reply")
    assert [s["text"] for s in workspace.chatra.sent] == ["😀" * 2500]


def test_a_reply_into_a_closed_conversation_opens_it_again(workspace: Workspace) -> None:
    """As an agent's message from Chatra's own app does: the client's answer is then a
    message of an open conversation, not a reopening (whose rules greet, notify and assign
    as for a client coming back, while the agent is in the chat)."""
    workspace.started()
    transcript = {
        "eventName": "chatTranscript",
        "messages": [
            {
                "id": "Acb7t59BkCvoXi6SS",
                "type": "client",
                "text": "Hi, is the blue kettle in stock?",
                "createdAt": 1741943525000,
            }
        ],
        "client": {"id": VISITOR, "chatId": "Kw2twCpXPKBFtP87S"},
    }
    posted = httpx.post(f"{workspace.url}/webhooks/online-chat/{SECRET}", json=transcript)
    assert posted.status_code == 200
    workspace.processed("online-chat:closed:Kw2twCpXPKBFtP87S:Acb7t59BkCvoXi6SS")
    with workspace.client("anna") as anna:
        assert anna.get(path()).json()["conversation"]["status"] == "closed"
        response = anna.post(f"{path()}/messages", json={"text": "It is back in stock!"})
        assert response.status_code == 202, response.text
        assert anna.get(path()).json()["conversation"]["status"] == "open"
        opened = anna.get("conversations", params={"status": "open"}).json()["conversations"]
        assert [c["id"] for c in opened] == [CONVERSATION]
    record = workspace.event(response.json()["event_id"])
    assert record.data["conversation"]["status"] == "open"
    wait_for(lambda: workspace.chatra.sent, "the reply")
    (sent,) = workspace.chatra.sent
    message_id = workspace.job(response.json()["job_id"]).result["id"]
    posted = httpx.post(
        f"{workspace.url}/webhooks/online-chat/{SECRET}", content=echo_of(sent, message_id)
    )
    assert posted.status_code == 200
    workspace.processed("online-chat:msg:answer-1")
    assert workspace.event("online-chat:msg:answer-1").event == "message"
    assert workspace.events("reopened") == []


def test_a_retried_reply_does_not_open_a_conversation_closed_since(workspace: Workspace) -> None:
    """The retry answers the first reply (``duplicate``) and changes nothing more: the
    conversation closed after the reply stays closed."""
    workspace.started()

    def transcript(*extra: dict[str, Any]) -> None:
        messages = [
            {"id": "Acb7t59BkCvoXi6SS", "type": "client", "text": "Hi", "createdAt": 1741943525000},
            *extra,
        ]
        body = {
            "eventName": "chatTranscript",
            "messages": messages,
            "client": {"id": VISITOR, "chatId": "Kw2twCpXPKBFtP87S"},
        }
        posted = httpx.post(f"{workspace.url}/webhooks/online-chat/{SECRET}", json=body)
        assert posted.status_code == 200
        last = messages[-1]["id"]
        workspace.processed(f"online-chat:closed:Kw2twCpXPKBFtP87S:{last}")

    transcript()
    key = {"Idempotency-Key": "closed-then-retried"}
    with workspace.client("anna") as anna:
        first = anna.post(f"{path()}/messages", json={"text": "Back in stock!"}, headers=key)
        assert first.status_code == 202, first.text
        assert anna.get(path()).json()["conversation"]["status"] == "open"
        transcript({"id": "bye-1", "type": "client", "text": "Thanks", "createdAt": 1741943700000})
        assert anna.get(path()).json()["conversation"]["status"] == "closed"
        again = anna.post(f"{path()}/messages", json={"text": "Back in stock!"}, headers=key)
        assert again.status_code == 200 and again.json()["duplicate"] is True, again.text
        assert anna.get(path()).json()["conversation"]["status"] == "closed"
