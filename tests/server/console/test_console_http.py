"""The console over real HTTP: sign-in, cookies, headers, the live stream and its filtering,
sounds, the JSON API."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from console_helpers import ANN, BOB, TOKENS, ConsoleServer
from scaffold import make_event

from rulekit.server.console.routes import COOKIE
from rulekit.server.console.web import CSP
from rulekit.store import JobSpec

END = {"type": "reload", "ok": True, "version": "end-marker"}


def read_stream(lines: Iterator[str], *, until: str = "end-marker") -> list[dict[str, Any]]:
    """The messages of an open SSE stream up to the one whose ``version`` is ``until``."""
    messages = []
    for line in lines:
        if line.startswith("data: "):
            message = json.loads(line.removeprefix("data: "))
            messages.append(message)
            if message.get("version") == until:
                return messages
    raise AssertionError(f"the stream ended before {until!r}: {messages}")


def open_stream(client: httpx.Client, server: ConsoleServer, **headers: str) -> Any:
    """An open stream; returns once the server has subscribed it to the feed (which it does
    before it answers)."""
    context = client.stream("GET", "/console/stream", headers=headers)
    response = context.__enter__()
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    # one iterator for the whole stream: dropping one closes the connection
    lines = response.iter_lines()
    assert next(lines) == "retry: 2000"
    return context, lines


# sign-in -------------------------------------------------------------------------------------
def test_sign_in_with_a_valid_token_sets_a_strict_http_only_cookie(
    console_server: ConsoleServer,
) -> None:
    with console_server.client() as client:
        response = client.post("/console/login", data={"token": TOKENS["ann"]})
        assert response.status_code == 303
        assert response.headers["location"] == "/console/"
        cookie = response.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}=")
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"httponly", "samesite=strict", "path=/console"} <= flags
        assert TOKENS["ann"] not in cookie  # the cookie holds a random session id
        me = client.get("/console/api/me").json()
        assert me["email"] == ANN
        assert me["admin"] is False
        assert me["channels"] == ["online-chat"]
        assert client.get("/console/").status_code == 200


@pytest.mark.parametrize("token", ["", "wrong", TOKENS["ann"] + "x", " ", "ümlaut"])
def test_sign_in_with_an_unknown_token_is_refused(
    console_server: ConsoleServer, token: str
) -> None:
    with console_server.client() as client:
        response = client.post("/console/login", data={"token": token})
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert "not known" in response.text
        assert client.get("/console/api/me").status_code == 401
        assert client.get("/console/").status_code == 303
        assert client.get("/console/stream").status_code == 401


def test_the_sign_in_page_says_when_no_token_is_configured(
    console_server: ConsoleServer,
) -> None:
    with console_server.client() as client:
        assert 'id="no-tokens" class="notice" hidden' in client.get("/console/login").text
        config = console_server.snapshot.config
        saved = config.raw.console.admin_token_sha256, [a.token_sha256 for a in config.raw.agents]
        config.raw.console.admin_token_sha256 = None
        for agent in config.raw.agents:
            agent.token_sha256 = None
        try:
            page = client.get("/console/login").text
        finally:
            config.raw.console.admin_token_sha256 = saved[0]
            for agent, token in zip(config.raw.agents, saved[1], strict=True):
                agent.token_sha256 = token
        assert 'id="no-tokens" class="notice">' in page
        assert "docs/operations.md" in page


def test_an_agent_without_a_token_cannot_sign_in_with_an_empty_one(
    console_server: ConsoleServer,
) -> None:
    # nobody@example.com has no token_sha256: neither "" nor the hash of "" opens a session
    with console_server.client() as client:
        for token in ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"):
            assert client.post("/console/login", data={"token": token}).status_code == 401


def test_sign_in_from_another_site_is_refused(console_server: ConsoleServer) -> None:
    with console_server.client() as client:
        response = client.post(
            "/console/login",
            data={"token": TOKENS["ann"]},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403
        assert "set-cookie" not in response.headers
        own = client.post(
            "/console/login", data={"token": TOKENS["ann"]}, headers={"Origin": console_server.url}
        )
        assert own.status_code == 303


@pytest.mark.parametrize(
    ("proto", "host", "origin", "allowed"),
    [
        # the console is on https (its proxy says so): a page on http:// is another site
        ("https", "console.example", "http://console.example", False),
        ("https", "console.example", "https://console.example:8443", False),
        ("https", "console.example", "https://console.example", True),
        ("https", "console.example", "https://CONSOLE.example:443", True),
        ("http", "console.example:8080", "https://console.example:8080", False),
        ("http", "console.example:8080", "http://console.example:8081", False),
        ("http", "console.example:8080", "http://console.example:8080", True),
        ("https", "console.example", "https://console.example/console", False),
        ("https", "console.example", "null", False),
    ],
)
def test_sign_in_must_come_from_the_consoles_whole_origin(
    console_server: ConsoleServer, proto: str, host: str, origin: str, allowed: bool
) -> None:
    """Scheme, host and port of the page must all be the console's: the host alone is not."""
    # from loopback, a trusted proxy: the console believes the scheme and host it forwards
    forwarded = {"X-Forwarded-Proto": proto, "X-Forwarded-Host": host, "Origin": origin}
    with console_server.client() as client:
        response = client.post("/console/login", data={"token": TOKENS["ann"]}, headers=forwarded)
        assert response.status_code == (303 if allowed else 403), response.text
        assert ("set-cookie" in response.headers) is allowed
        if allowed:  # signing out is checked alike
            forwarded["Origin"] = f"{proto}://other.example"
            assert client.post("/console/logout", headers=forwarded).status_code == 403


def test_a_forged_session_cookie_is_refused(console_server: ConsoleServer) -> None:
    with console_server.client() as client:
        client.cookies.set(COOKIE, "forged", domain="127.0.0.1", path="/console")
        assert client.get("/console/api/me").status_code == 401


def test_sign_out_ends_the_session(console_server: ConsoleServer) -> None:
    with console_server.client("ann") as client:
        session = client.cookies[COOKIE]
        assert client.post("/console/logout").status_code == 303
        client.cookies.set(COOKIE, session, domain="127.0.0.1", path="/console")
        assert client.get("/console/api/me").status_code == 401


@pytest.mark.parametrize("who", ["ann", "bob"])
def test_signing_in_again_ends_the_session_the_browser_held(
    console_server: ConsoleServer, who: str
) -> None:
    """Signing in over a session (again, or as another agent on a shared computer) leaves
    nothing of the earlier one usable: a copy of its cookie is refused, as after signing out."""
    with console_server.client("ann") as client:
        earlier = client.cookies[COOKIE]
        assert client.post("/console/login", data={"token": TOKENS[who]}).status_code == 303
        assert client.cookies[COOKIE] != earlier
        assert client.get("/console/api/me").status_code == 200
    with console_server.client() as copy:
        copy.cookies.set(COOKIE, earlier, domain="127.0.0.1", path="/console")
        assert copy.get("/console/api/me").status_code == 401


def test_the_admin_sees_everything(console_server: ConsoleServer) -> None:
    with console_server.client("admin") as client:
        me = client.get("/console/api/me").json()
        assert me["admin"] is True
        assert me["email"] is None


# headers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/console/login", "/console/", "/console/api/me", "/console/static/console.js"]
)
def test_every_response_carries_the_content_security_policy(
    console_server: ConsoleServer, path: str
) -> None:
    with console_server.client("ann") as client:
        response = client.get(path)
        assert response.status_code == 200
        assert response.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


def test_pages_have_no_inline_script_or_style(console_server: ConsoleServer) -> None:
    with console_server.client("ann") as client:
        for path in ("/console/", "/console/login"):
            page = client.get(path).text
            assert "<script>" not in page and "onclick" not in page and "style=" not in page
        script = client.get("/console/static/console.js")
        assert script.headers["content-type"].startswith("text/javascript")
        assert "innerHTML" not in script.text


def test_unknown_static_files_are_not_served(console_server: ConsoleServer) -> None:
    with console_server.client("ann") as client:
        for path in ("/console/static/nope.js", "/console/static/..%2Froutes.py"):
            assert client.get(path).status_code == 404


# sounds --------------------------------------------------------------------------------------
def test_bundled_and_configured_sounds_are_served(console_server: ConsoleServer) -> None:
    with console_server.client("bob") as client:
        for name in ("bell", "chime", "alert", "ding"):
            response = client.get(f"/console/sounds/{name}.wav")
            assert response.status_code == 200, name
            assert response.headers["content-type"] in ("audio/wav", "audio/x-wav")
            assert response.content[:4] == b"RIFF"


@pytest.mark.parametrize(
    "path",
    [
        "/console/sounds/nope.wav",
        "/console/sounds/..%2Fsecret.txt",
        "/console/sounds/%2E%2E%2Fsecret",
        "/console/sounds/..%2F..%2Frulekit.yaml",
        "/console/sounds/custom%2Fding.wav",
        "/console/sounds/%2Fetc%2Fpasswd",
    ],
)
def test_sound_paths_outside_the_config_are_refused(
    console_server: ConsoleServer, path: str
) -> None:
    with console_server.client("ann") as client:
        response = client.get(path)
        assert response.status_code == 404
        assert b"not for the console" not in response.content


def test_sounds_need_a_session(console_server: ConsoleServer) -> None:
    with console_server.client() as client:
        assert client.get("/console/sounds/bell.wav").status_code == 401


# the live stream -----------------------------------------------------------------------------
def event_message(channel: str, name: str = "Eve") -> dict[str, Any]:
    event = make_event(
        channel=channel,
        conversation={"id": f"conv-{channel}"},
        client={"id": "c1", "name": name},
        message={"text": "hello"},
    )
    return {"type": "event", "event": event.public()}


def test_the_stream_delivers_what_each_agent_may_see(console_server: ConsoleServer) -> None:
    chat = event_message("online-chat")
    hook = event_message("webhook")
    streams = {}
    clients = {who: console_server.client(who) for who in ("ann", "bob", "admin")}
    try:
        for who, client in clients.items():
            streams[who] = open_stream(client, console_server)
        for message in [
            chat,
            hook,
            {"type": "rule", "event_id": chat["event"]["id"], "rule": "greet"},
            {"type": "action", "channel": "webhook", "action": "slack", "outcome": "done"},
            {"type": "sound", "sound": "bell", "to": [ANN.lower()], "channel": "online-chat"},
            {"type": "sound", "sound": "chime", "to": [BOB], "channel": "webhook"},
            {"type": "sound", "sound": "alert", "to": ["*"], "channel": "online-chat"},
            {"type": "sound", "sound": "door", "to": ["*"], "channel": "webhook"},
            {"type": "sound", "sound": "horn", "to": ["*"], "event_id": "unknown"},
            {"type": "dead_letter", "job_id": 3, "error": "boom"},
            {"type": "reload", "ok": False, "error": "rules.yaml:3: bad"},
            END,
        ]:
            console_server.publish(message)
        seen = {who: read_stream(response) for who, (_, response) in streams.items()}
    finally:
        for context, _ in streams.values():
            context.__exit__(None, None, None)
        for client in clients.values():
            client.close()

    def summary(messages: list[dict[str, Any]]) -> list[str]:
        out = []
        for m in messages:
            detail = m.get("sound") or m.get("rule") or m.get("action") or m.get("error")
            if m["type"] == "event":
                detail = m["event"]["channel"]
            out.append(f"{m['type']}:{detail}")
        return out

    assert summary(seen["ann"]) == [
        "event:online-chat",
        "rule:greet",  # routed by the channel of the event it names
        "sound:bell",
        "sound:alert",  # "*": every agent of the sound's channel
        "reload:None",  # it failed; why quotes the config: the admin's to read
        "reload:None",
    ]
    assert summary(seen["bob"]) == [
        "event:webhook",
        "action:slack",
        "sound:chime",
        "sound:door",
        "reload:None",
        "reload:None",
    ]
    assert len(seen["admin"]) == 12
    assert "reload:rules.yaml:3: bad" in summary(seen["admin"])
    seqs = [m["seq"] for m in seen["admin"]]
    assert seqs == sorted(seqs)


def test_messages_naming_a_stored_event_follow_its_channel(console_server: ConsoleServer) -> None:
    event = make_event(channel="online-chat", conversation={"id": "k1"})
    with console_server.store.transaction() as state:
        state.record_event(event, inbox_id=None, trace={})
    with console_server.client("bob") as bob, console_server.client("ann") as ann:
        (bob_context, bob_stream), (ann_context, ann_stream) = (
            open_stream(bob, console_server),
            open_stream(ann, console_server),
        )
        try:
            console_server.publish({"type": "action", "event_id": event.id, "action": "assign"})
            console_server.publish(END)
            assert [m["type"] for m in read_stream(bob_stream)] == ["reload"]
            assert [m["type"] for m in read_stream(ann_stream)] == ["action", "reload"]
        finally:
            bob_context.__exit__(None, None, None)
            ann_context.__exit__(None, None, None)


def test_a_reconnect_with_last_event_id_gets_what_it_missed(
    console_server: ConsoleServer,
) -> None:
    with console_server.client("ann") as client:
        context, response = open_stream(client, console_server)
        try:
            console_server.publish(
                {"type": "sound", "sound": "bell", "to": ["*"], "channel": "online-chat"}
            )
            console_server.publish({**END, "version": "first"})
            first = read_stream(response, until="first")
        finally:
            context.__exit__(None, None, None)
        last = first[-1]["seq"]
        # published while the page was away
        console_server.publish(
            {"type": "sound", "sound": "chime", "to": ["*"], "channel": "online-chat"}
        )
        console_server.publish({"type": "sound", "sound": "alert", "to": [BOB]})
        context, response = open_stream(client, console_server, **{"Last-Event-ID": str(last)})
        try:
            console_server.publish(END)
            again = read_stream(response)
        finally:
            context.__exit__(None, None, None)
    assert [m.get("sound") or m["version"] for m in again] == ["chime", "end-marker"]
    assert again[0]["seq"] > last


def test_a_page_of_a_restarted_daemon_gets_everything_new(console_server: ConsoleServer) -> None:
    # the page's Last-Event-ID is from before a restart: the new numbering starts lower
    with console_server.client("ann") as client:
        context, response = open_stream(client, console_server, **{"Last-Event-ID": "900"})
        try:
            console_server.publish(
                {"type": "sound", "sound": "bell", "to": ["*"], "channel": "online-chat"}
            )
            console_server.publish(END)
            messages = read_stream(response)
        finally:
            context.__exit__(None, None, None)
    assert [m["type"] for m in messages] == ["sound", "reload"]


def test_the_stream_sends_keep_alive_comments_and_ends_with_its_page(
    console_server: ConsoleServer,
) -> None:
    with console_server.client("ann") as client:
        context, response = open_stream(client, console_server)
        try:
            assert next(line for line in response if line) == ": keep-alive"
            assert console_server.subscribers() == 2  # the page's, and the console's recorder
        finally:
            context.__exit__(None, None, None)
    deadline = time.monotonic() + 30  # a liveness bound, not a speed requirement
    while console_server.subscribers() > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert console_server.subscribers() == 1


def test_a_revoked_session_ends_its_stream(console_server: ConsoleServer) -> None:
    with console_server.client("ann") as client:
        context, response = open_stream(client, console_server)
        try:
            closed = console_server.console.sessions.close(client.cookies[COOKIE])
            asyncio.run_coroutine_threadsafe(closed, console_server.loop).result(10)
            # the server ends the stream at the next keep-alive
            assert [line for line in response if line] == []
        finally:
            context.__exit__(None, None, None)


def test_a_console_turned_off_by_a_reload_ends_its_streams(console_server: ConsoleServer) -> None:
    console = console_server.console.get_snapshot().config.raw.console
    with console_server.client("ann") as client:
        context, response = open_stream(client, console_server)
        try:
            console.enabled = False  # as a reload loading `console: {enabled: false}`
            # the server ends the stream at the next keep-alive (bounded: not one per 0.3 s)
            assert list(itertools.islice((line for line in response if line), 3)) == []
            assert client.get("/console/api/me").status_code == 404
            console.enabled = True
            assert client.get("/console/api/me").status_code == 401  # the session is over
        finally:
            console.enabled = True
            context.__exit__(None, None, None)


# the JSON API --------------------------------------------------------------------------------
def seed_conversation(server: ConsoleServer) -> str:
    first = make_event(
        channel="online-chat",
        event="created",
        occurred_at=datetime(2026, 1, 5, 10, 0, tzinfo=UTC),
        conversation={"id": "conv-1", "status": "open", "group": "support"},
        client={
            "id": "visitor-1",
            "display_name": "Visitor 4p40",
            "ip": "203.0.113.9",
            "browser": "Firefox 120",
            "os": "Windows 11",
            "language": "ru",
            "country": "Germany",
            "city": "Berlin",
            "last_visit": "2026-01-05T09:58:00Z",
            "custom": {"plan": "gold"},
        },
        message={"text": "<img src=x onerror=alert(1)>", "author": "client"},
    )
    second = make_event(
        channel="online-chat",
        event="client_updated",
        occurred_at=datetime(2026, 1, 5, 10, 5, tzinfo=UTC),
        conversation={"id": "conv-1"},
        client={"id": "visitor-1", "name": "Maria", "email": "maria@example.com"},
    )
    with server.store.transaction() as state:
        state.record_event(
            first,
            inbox_id=None,
            trace={"team": {"tracked": True, "online_in": {"support": []}}},
            jobs=[JobSpec("Greet", "autoreply", {"text": "hi"}, "chatra")],
        )
        state.record_event(second, inbox_id=None, trace={})
        state.save_client("online-chat", second.client.model_copy(update={"phone": "+49 30 1"}))
    return "conv-1"


def test_the_conversation_view_has_the_client_panel(console_server: ConsoleServer) -> None:
    conversation_id = seed_conversation(console_server)
    with console_server.client("ann") as client:
        data = client.get(f"/console/api/conversations/online-chat/{conversation_id}").json()
    panel = data["client"]
    assert panel["name"] == "Maria"
    assert panel["email"] == "maria@example.com"
    assert panel["phone"] == "+49 30 1"
    assert panel["ip"] == "203.0.113.9"
    assert panel["language"] == "ru"
    assert panel["browser"] == "Firefox 120"
    assert panel["os"] == "Windows 11"
    assert (panel["city"], panel["country"]) == ("Berlin", "Germany")
    assert panel["last_visit"].startswith("2026-01-05T09:58")
    assert panel["custom"] == {"plan": "gold"}
    assert data["conversation"]["status"] == "open"
    assert [e["event"]["event"] for e in data["events"]] == ["client_updated", "created"]
    assert data["events"][1]["jobs"][0]["rule"] == "Greet"
    # the presence the rules read deciding about the event, in words
    assert data["events"][1]["team"] == ["online in support: nobody"]
    assert "team" not in data["events"][0]


def test_conversations_of_other_channels_are_hidden(console_server: ConsoleServer) -> None:
    conversation_id = seed_conversation(console_server)
    with console_server.client("bob") as client:
        path = f"/console/api/conversations/online-chat/{conversation_id}"
        assert client.get(path).status_code == 404
        assert client.get("/console/api/recent").json()["events"] == []
    with console_server.client("admin") as client:
        assert client.get(path).status_code == 200
        assert client.get("/console/api/conversations/online-chat/nope").status_code == 404


def test_recent_lists_events_and_dead_letters(console_server: ConsoleServer) -> None:
    seed_conversation(console_server)
    with console_server.store.transaction() as state:
        (job,) = state.claim_jobs("test", lease=60)
        state.record_attempt(job.id, "dead", error="chatra said 403")
    with console_server.client("ann") as client:
        recent = client.get("/console/api/recent").json()
    assert [e["event"]["event"] for e in recent["events"]] == ["client_updated", "created"]
    (dead,) = recent["dead_letters"]
    assert dead["error"] == "chatra said 403"
    assert dead["channel"] == "online-chat"
    with console_server.client("bob") as client:
        assert client.get("/console/api/recent").json()["dead_letters"] == []
