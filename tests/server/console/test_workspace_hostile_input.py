"""The workspace API's writes against hostile requests, on a running daemon (SQLite and
PostgreSQL): every malformed body, path or value gets a 4xx with a JSON message, never a 500,
nothing is half-written, and an ``Idempotency-Key`` stands for one request."""

from __future__ import annotations

import base64
import json
import logging

import httpx
import pytest
from workspace_helpers import SAMPLES, SECRET, Workspace, path, wait_for, workspace

from rulekit.server.console.web import CSP

pytest.importorskip("rulekit_chatra")

__all__ = ["workspace"]

WRITES = [
    ("POST", f"{path()}/tags"),
    ("POST", f"{path()}/assign"),
    ("POST", f"{path()}/priority"),
    ("PATCH", f"{path()}/client"),
    ("POST", f"{path()}/messages"),
    ("POST", "presence"),
]

BAD_BODIES = [
    b"[" * 20_000 + b"]" * 20_000,  # deeper than any parser's stack
    b'{"add": [' + b'{"a": ' * 70 + b"1" + b"}" * 70 + b"]}",
    b'{"add": ["\\ud800"], "text": "\\udfff", "name": "\\ud800", "status": "\\ud800"}',
    b'{"\\ud800": 1}',
    b'{"priority": NaN}',
    b'{"add": ["a"], "add": ["b"]}',
    b'{"n": 1' + b"0" * 400 + b"}",
    b'"text"',
    b"\xff\xfe{}",
]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == []


@pytest.mark.parametrize(("method", "endpoint"), WRITES)
def test_malformed_bodies_get_400_and_change_nothing(
    workspace: Workspace, caplog: pytest.LogCaptureFixture, method: str, endpoint: str
) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        before = anna.get(path()).json()
        for body in BAD_BODIES:
            response = anna.request(
                method, endpoint, content=body, headers={"Content-Type": "application/json"}
            )
            assert response.status_code == 400, (body[:40], response.text)
            assert response.json()["error"].startswith("the request body"), response.text
        after = anna.get(path()).json()
    assert after["conversation"] == before["conversation"]
    assert after["client"] == before["client"]
    assert len(after["events"]) == len(before["events"])
    no_tracebacks(caplog)


def test_paths_that_are_not_utf8_get_400(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        for raw in ("%FF", "%ED%A0%80", "online-chat%3A%C3"):
            assert anna.get(f"conversations/{raw}").status_code == 400, raw
            response = anna.post(f"conversations/{raw}/tags", json={"add": ["x"]})
            assert response.status_code == 400, raw
            assert "UTF-8" in response.json()["error"]
        for hidden in ("..%2F..%2Fetc%2Fpasswd", "%00", "a" * 5000):
            assert anna.get(f"conversations/{hidden}").status_code == 404
    no_tracebacks(caplog)


def test_names_and_texts_with_characters_a_screen_acts_on_are_refused(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    workspace.started()
    refused = [
        ("POST", "tags", {"add": ["\u202evip"]}),  # right-to-left override
        ("POST", "tags", {"add": ["\u200b"]}),  # zero-width space: looks empty
        ("POST", "tags", {"add": ["vip\ufeff"]}),  # looks like "vip"
        ("POST", "tags", {"add": ["a\x85b"]}),  # C1 next line
        ("POST", "tags", {"remove": ["a\u2028b"]}),
        ("PATCH", "client", {"name": "\x1b[2J\x1b]52;c;cHduZWQ=\x07Maria"}),
        ("PATCH", "client", {"name": "Maria\x00"}),
        ("PATCH", "client", {"phone": "+49\n30"}),
        ("PATCH", "client", {"email": "@"}),
        ("PATCH", "client", {"email": "maria@example.com, boss@example.com"}),
        ("PATCH", "client", {"notes": "fine\n\x1b[31mred"}),
        ("POST", "messages", {"text": "Hi\x00"}),
        ("POST", "messages", {"text": "Hi \u202egnp.exe"}),
    ]
    with workspace.client("anna") as anna:
        for method, endpoint, body in refused:
            response = anna.request(method, f"{path()}/{endpoint}", json=body)
            assert response.status_code == 400, (body, response.text)
            assert (
                "character" in response.json()["error"]
                or "local@domain" in (response.json()["error"])
            )
        view = anna.get(path()).json()
        assert view["conversation"]["tags"] == [] and view["client"].get("name") is None
        # what people write is kept: emoji joined by U+200D, accents, lines in notes
        kept = anna.post(f"{path()}/tags", json={"add": ["\U0001f469\u200d\U0001f4bb", "café"]})
        assert kept.status_code == 200, kept.text
        notes = anna.patch(f"{path()}/client", json={"notes": "Line one\n\tLine two"})
        assert notes.status_code == 202, notes.text
    assert workspace.chatra.sent == []
    no_tracebacks(caplog)


def test_an_idempotency_key_stands_for_one_request(workspace: Workspace) -> None:
    workspace.started()
    with workspace.client("anna") as anna:
        key = {"Idempotency-Key": "k-reply"}
        first = anna.post(f"{path()}/messages", json={"text": "one"}, headers=key)
        other = anna.post(f"{path()}/messages", json={"text": "two"}, headers=key)
        retry = anna.post(f"{path()}/messages", json={"text": "one"}, headers=key)
        assert (first.status_code, other.status_code, retry.status_code) == (202, 422, 200)
        assert "different request" in other.json()["error"]
        assert retry.json()["duplicate"] is True

        key = {"Idempotency-Key": "k-tags"}
        tagged = anna.post(f"{path()}/tags", json={"add": ["vip"]}, headers=key)
        assert tagged.status_code == 200
        assert anna.post(f"{path()}/tags", json={"add": ["new"]}, headers=key).status_code == 422
        with workspace.client("admin") as admin:
            admin.post(f"{path()}/tags", json={"remove": ["vip"]})
        # a retry answers what the first request did: it does not tag again
        again = anna.post(f"{path()}/tags", json={"add": ["vip"]}, headers=key)
        assert again.status_code == 200 and again.json() == tagged.json()
        assert anna.get(path()).json()["conversation"]["tags"] == []

        # a refused request leaves its key free for the corrected one
        key = {"Idempotency-Key": "k-fixed"}
        bad = anna.post(f"{path()}/priority", json={"priority": "soon"}, headers=key)
        good = anna.post(f"{path()}/priority", json={"priority": "high"}, headers=key)
        assert (bad.status_code, good.status_code) == (400, 200)
    with workspace.client("boris") as boris:  # keys are each agent's own
        assert boris.post("presence", json={"status": "away"}, headers=key).status_code == 200
    wait_for(lambda: workspace.job(first.json()["job_id"]).status == "done", "the reply")
    assert [sent["text"] for sent in workspace.chatra.sent] == ["one"]
    added = [e for e in workspace.events("updated") if e.data["changed"]["tags"].get("added")]
    assert [e.data["changed"]["tags"]["added"] for e in added] == [["vip"]]


def test_query_parameters_given_twice_or_unknown_get_400(workspace: Workspace) -> None:
    with workspace.client("anna") as anna:
        for query in ("view=mine&view=all", "status=open&stauts=closed", "limit=5&limit=500"):
            response = anna.get(f"conversations?{query}")
            assert response.status_code == 400, query
            assert "query parameter" in response.json()["error"]
        assert anna.get("conversations?view=mine&status=open&limit=5").status_code == 200
    with workspace.client("admin") as admin:
        assert admin.get("stats?since=7d&since=1d").status_code == 400
        assert admin.get("stats?since=7d").status_code == 200


def test_a_page_size_is_written_in_ascii_digits(workspace: Workspace) -> None:
    """``limit`` is read as strictly as the ids in paths: what ``int()`` also takes (a sign,
    spaces, ``_``, digits of other scripts) is no page size a client meant."""
    with workspace.client("anna") as anna:
        for limit in ("+5", " 5", "5 ", "0_5", "\u0665", "\uff15", "-0", "05" * 10):
            response = anna.get("conversations", params={"limit": limit})
            assert response.status_code == 400, limit
            assert "limit" in response.json()["error"]
        assert anna.get("conversations", params={"limit": "200"}).status_code == 200


@pytest.mark.parametrize(
    "since",
    [
        "99999999999d",
        "9" * 30,
        "3000000d",
        "1e400d",
        "%FF",
        # times whose UTC falls outside the calendar Python counts in
        "0001-01-01T00:00%2B05:00",
        "9999-12-31T23:59-05:00",
    ],
)
def test_stats_answer_400_to_a_since_out_of_range(workspace: Workspace, since: str) -> None:
    response = httpx.get(
        f"{workspace.url}/console/api/stats?since={since}",
        headers={"Authorization": "Bearer admin-workspace-token-0123"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("since:")


def test_a_webhook_whose_ids_hold_nul_is_kept_on_every_store(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's text cannot hold NUL: ids are stored with U+FFFD in its place, and the
    console finds the conversation by that id; a NUL asked for finds nothing."""
    sample = json.loads((SAMPLES / "chat_started_anonymous.json").read_text())
    sample["client"]["id"] = "nul\u0000client"
    sample["message"]["id"] = "nul\u0000message"
    response = httpx.post(
        f"{workspace.url}/webhooks/online-chat/{SECRET}", content=json.dumps(sample).encode()
    )
    assert response.status_code == 200, response.text
    workspace.processed("online-chat:msg:nul\ufffdmessage")
    with workspace.client("anna") as anna:
        found = anna.get(path("online-chat:nul\ufffdclient"))
        assert found.status_code == 200, found.text
        assert anna.get(path("online-chat:nul\u0000client")).status_code == 404
        for name in ("q", "tag"):
            query = anna.get("conversations", params={name: "a\u0000"})
            assert query.status_code == 400, query.text
        for forged_time, name in [
            ("2026-01-01T00:00:00+00:00", "\u0000"),
            ("0001-01-01T00:00:00+05:00", "x"),  # before the year 1 in UTC
            ("9999-12-31T23:59:59-05:00", "x"),
        ]:
            forged = json.dumps([forged_time, name, "x"]).encode()
            cursor = base64.urlsafe_b64encode(forged).decode()
            answer = anna.get("conversations", params={"cursor": cursor})
            assert answer.status_code == 400, (forged_time, answer.text)
    no_tracebacks(caplog)


def test_ids_in_paths_are_ascii_digits_or_404(
    workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    with workspace.client("admin") as admin:
        for job_id in ("²", "٣", "1²", "-1", "+1", " 1", "1e3", "9" * 40):
            response = admin.post(f"dead-letters/{job_id}/retry")
            assert response.status_code == 404, (job_id, response.text)
            response = admin.post(f"set-aside/{job_id}/requeue")
            assert response.status_code == 404, (job_id, response.text)
    no_tracebacks(caplog)


def test_every_api_endpoint_takes_the_bearer_token(workspace: Workspace) -> None:
    with workspace.client("anna") as anna, workspace.client() as nobody:
        for endpoint in ("me", "recent", "conversations", "presence", "dead-letters"):
            assert anna.get(endpoint).status_code == 200, endpoint
            assert nobody.get(endpoint).status_code == 401, endpoint
        assert anna.get("me").json()["email"] == "anna@example.com"


def test_responses_no_console_handler_made_carry_the_security_headers(
    workspace: Workspace,
) -> None:
    """An unknown path under /console, a method a route does not take: the daemon's own 404
    and 405 carry the console's headers too (docs/operations.md: every console response)."""
    with httpx.Client(base_url=workspace.url, timeout=10) as client:
        for method, where in [
            ("GET", "/console/nothing-here"),
            ("GET", "/console/api/nothing-here"),
            ("PUT", "/console/login"),
            ("DELETE", "/console/api/me"),
            ("GET", "/console/static/"),
        ]:
            response = client.request(method, where)
            assert response.status_code in (404, 405), (method, where, response.status_code)
            assert response.headers.get("content-security-policy") == CSP, (method, where)
            assert response.headers.get("x-content-type-options") == "nosniff", (method, where)
            assert response.headers.get("x-frame-options") == "DENY", (method, where)
            assert response.headers.get("cache-control") == "no-store", (method, where)
