"""One agent's console pages cannot take every connection: each agent holds at most
``MAX_STREAMS`` live streams, the next one is refused (429) until one closes, and other agents
are not affected. What the streams carry (and the daemon keeps for reconnecting pages) is
bounded whatever a client sent."""

from __future__ import annotations

import asyncio
import json
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from console_helpers import TOKENS, ConsoleServer, console_app
from starlette.requests import ClientDisconnect
from workspace_helpers import wait_for

from rulekit.runtime.feed import LiveFeed
from rulekit.server.console import Console
from rulekit.server.console.routes import COOKIE, MAX_STREAMS
from rulekit.server.console.sessions import token_hash
from rulekit.snapshot import load_snapshot
from rulekit.store import open_store


def open_stream(stack: ExitStack, client: httpx.Client) -> httpx.Response:
    response = stack.enter_context(client.stream("GET", "/console/stream"))
    if response.status_code == 200:
        lines = response.iter_lines()  # kept: dropping the iterator would close the stream
        assert next(lines) == "retry: 2000"  # the server holds it open now
        stack.callback(lines.close)
    return response


def test_each_agent_holds_a_bounded_number_of_streams(console_server: ConsoleServer) -> None:
    with console_server.client("ann") as ann, console_server.client("bob") as bob:
        with ExitStack() as streams:
            for _ in range(MAX_STREAMS):
                assert open_stream(streams, ann).status_code == 200
            refused = open_stream(streams, ann)
            assert refused.status_code == 429
            assert "live streams are open already" in json.loads(refused.read())["error"]
            assert refused.headers["retry-after"]
            with ExitStack() as other:  # another agent's pages are not counted with hers
                assert open_stream(other, bob).status_code == 200
        # her pages closed: their places are free again
        wait_for(lambda: not console_server.console.streams, "her streams to close")
        with ExitStack() as again:
            assert open_stream(again, ann).status_code == 200


def test_the_feed_carries_a_bounded_part_of_what_a_client_sent(tmp_path) -> None:
    """The daemon keeps the feed's recent messages (for reconnecting pages) and each open
    stream a backlog of them: a client's name or email of a megabyte, or an event whose
    rules fail by the dozen, is carried cut short, live and when a page reconnects; so is
    each text of the event list a page opens with, of the conversation list, of the
    conversation's view (the client's and the conversation's: the page they are on) and of
    what a change of the conversation answers."""
    from console_helpers import daemon_with_feed, messages, sha

    from rulekit.runtime.planning import MAX_FEED_ERRORS, PREVIEW
    from rulekit.server.console.conversations import MAX_THREAD_TEXT
    from rulekit.server.console.journal import MAX_LISTED_TEXT

    secret = "stream-budget-secret-0123456789"
    rules = "".join(
        f"- name: r{n}\n  on: {{channel: web}}\n"
        f"  do:\n    - autoreply: {{text: '{{{{ client.name * 2 }}}}'}}\n"
        for n in range(40)
    )
    config = (
        "rules: rules.d\nstorage: sqlite:///rulekit.sqlite3\n"
        f"console: {{admin_token_sha256: {sha('admin-stream-token-0123')}}}\n"
        f"channels:\n  web: {{provider: webhook, webhook_secret: {secret}}}\n"
    )
    big = "n" * 1_000_000
    event = {
        "id": "big-1",
        "event": "created",
        "conversation": {"id": "c-1", "page": "https://shop.example/" + big},
        "client": {"id": "v-1", "name": big, "email": "e" * 500_000 + "@x.example"},
        "message": {"text": big},
    }

    def first_event(response: httpx.Response) -> dict:
        return next(m for m in messages(response.iter_lines()) if m.get("type") == "event")

    with daemon_with_feed(tmp_path, rules, config) as (url, _):
        login = httpx.post(f"{url}/console/login", data={"token": "admin-stream-token-0123"})
        with httpx.Client(base_url=url, cookies=login.cookies, timeout=30) as admin:
            with admin.stream("GET", "/console/stream") as live:
                sent = httpx.post(f"{url}/webhooks/web/{secret}", content=json.dumps(event))
                assert sent.status_code == 200
                shown = [first_event(live)]
            with admin.stream("GET", "/console/stream?last_event_id=0") as again:
                shown.append(first_event(again))  # told again from what the daemon kept
            listed = admin.get("/console/api/recent")  # the event list a page opens with
            view = admin.get("/console/api/conversations/web:c-1")
            found = admin.get("/console/api/conversations")
            tagged = admin.post("/console/api/conversations/web:c-1/tags", json={"add": ["x"]})
    assert len(view.content) < 100_000
    assert len(view.json()["conversation"]["page"]) == MAX_THREAD_TEXT
    assert tagged.status_code == 200 and len(tagged.content) < 50_000
    (said,) = view.json()["thread"]
    assert said["text"] == "n" * (MAX_THREAD_TEXT - 1) + "…"
    assert len(view.json()["client"]["name"]) == MAX_THREAD_TEXT
    assert len(found.content) < 50_000
    assert [c["id"] for c in found.json()["conversations"]] == ["web:c-1"]
    assert len(found.json()["conversations"][0]["conversation"]["page"]) == MAX_LISTED_TEXT
    assert len(listed.content) < 50_000
    (entry,) = [e["event"] for e in listed.json()["events"] if e["event"]["id"] == "web:big-1"]
    assert entry["message"]["text"] == "n" * (MAX_LISTED_TEXT - 1) + "…"
    assert len(entry["client"]["name"]) == len(entry["client"]["email"]) == MAX_LISTED_TEXT
    for message in shown:
        assert message["event_id"] == "web:big-1"
        assert len(message["client_name"]) <= PREVIEW
        assert len(message["text"]) <= PREVIEW
        assert 0 < len(message["errors"]) <= MAX_FEED_ERRORS
        assert all(len(error) <= PREVIEW for error in message["errors"])
        assert len(json.dumps(message)) < 20_000


def test_streams_opened_together_are_counted_as_they_come(console_files, tmp_path) -> None:
    """An agent's pages opened all at once, each asking for what it missed (Last-Event-ID: 0:
    the backlog is read from the store before the stream starts), get no more streams than
    pages opened one after another: each place is taken before anything is awaited. Driven
    through the console's ASGI app itself, so that every request is under way together."""
    snapshot = load_snapshot(console_files, tmp_path / "rules.d")
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    feed = LiveFeed()
    console = Console(feed, lambda: snapshot, store, keepalive=0.3)
    app = console_app(console)
    pages = MAX_STREAMS + 4

    async def open_pages() -> list[int]:
        console.recorder.start()
        feed.publish({"type": "reload", "ok": True, "rules_version": "v1"})  # a backlog
        for _ in range(10_000):
            if console.recorder.recent:
                break
            await asyncio.sleep(0)
        session = await console.sessions.open(token_hash(TOKENS["ann"]))
        gone = asyncio.Event()
        statuses: list[int] = []

        async def page() -> None:
            async def receive() -> dict[str, Any]:
                await gone.wait()
                return {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await app(stream_scope(session), receive, send)

        opened = [asyncio.create_task(page()) for _ in range(pages)]
        for _ in range(3000):  # (a bound on a hang, not on speed)
            if len(statuses) == pages:
                break
            await asyncio.sleep(0.01)
        answered = list(statuses)
        gone.set()
        await asyncio.gather(*opened)
        return answered

    try:
        statuses = asyncio.run(open_pages())
    finally:
        store.close()
    assert sorted(statuses) == [200] * MAX_STREAMS + [429] * (pages - MAX_STREAMS)
    assert not console.streams  # every place given back once the pages left
    assert feed.subscribers == 0  # nor is any page's subscription left behind


def stream_scope(session: str) -> dict[str, Any]:
    """The ASGI scope of a console page's stream, with its session and ``Last-Event-ID: 0``."""
    headers = [
        (b"host", b"console.example"),
        (b"cookie", f"{COOKIE}={session}".encode()),
        (b"last-event-id", b"0"),
        (b"accept", b"text/event-stream"),
    ]
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/console/stream",
        "raw_path": b"/console/stream",
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("console.example", 80),
    }


def test_a_page_gone_before_its_stream_began_leaves_nothing_subscribed(
    console_files, tmp_path
) -> None:
    """A page that left while its stream was being opened (its backlog read from the store),
    on a server of ASGI spec 2.4 (``send`` raises once the client is gone): the stream's body
    never starts, and its subscription to the feed ends all the same (it was kept for ever,
    every later message queued for nobody)."""
    snapshot = load_snapshot(console_files, tmp_path / "rules.d")
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    feed = LiveFeed()
    console = Console(feed, lambda: snapshot, store, keepalive=0.3)
    app = console_app(console)

    async def gone_pages() -> tuple[int, int]:
        console.recorder.start()
        feed.publish({"type": "reload", "ok": True, "rules_version": "v1"})  # a backlog
        for _ in range(10_000):
            if console.recorder.recent:
                break
            await asyncio.sleep(0)
        before = feed.subscribers  # the recorder's
        session = await console.sessions.open(token_hash(TOKENS["ann"]))

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            raise OSError("the page has left")

        scope = stream_scope(session)
        scope["asgi"]["spec_version"] = "2.4"
        for _ in range(5):
            with pytest.raises(ClientDisconnect):
                await app(scope, receive, send)
        return before, feed.subscribers

    try:
        before, after = asyncio.run(gone_pages())
    finally:
        store.close()
    assert after == before
    assert not console.streams


def test_a_change_of_the_client_answers_a_bounded_part_of_what_the_client_sent(tmp_path) -> None:
    """An agent's change of the client's name answers the client panel as it is now: the
    custom data a client sent (a megabyte of it) is cut as in the conversation's view."""
    from workspace_helpers import SAMPLES, SECRET, path, running

    from rulekit.server.console.conversations import MAX_THREAD_TEXT

    body = json.loads((SAMPLES / "chat_started_anonymous.json").read_text())
    body["client"]["info"] = {"plan": "v" * 1_000_000}
    with running("sqlite", tmp_path) as site:
        sent = httpx.post(f"{site.url}/webhooks/online-chat/{SECRET}", content=json.dumps(body))
        assert sent.status_code == 200, sent.text
        site.processed("online-chat:msg:Acb7t59BkCvoXi6SS")
        with site.client("anna") as anna:
            changed = anna.patch(f"{path()}/client", json={"name": "Maria Lopez"})
            unchanged = anna.patch(f"{path()}/client", json={"name": "Maria Lopez"})
    for answer in (changed, unchanged):
        assert answer.status_code in (200, 202), answer.text
        assert len(answer.content) < 50_000
        assert answer.json()["client"]["custom"]["plan"] == "v" * (MAX_THREAD_TEXT - 1) + "…"
