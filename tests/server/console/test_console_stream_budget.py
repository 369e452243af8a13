"""One agent's console pages cannot take every connection: each agent holds at most
``MAX_STREAMS`` live streams, the next one is refused (429) until one closes, and other agents
are not affected. What the streams carry (and the daemon keeps for reconnecting pages) is
bounded whatever a client sent."""

from __future__ import annotations

import json
from contextlib import ExitStack

import httpx
from console_helpers import ConsoleServer
from workspace_helpers import wait_for

from rulekit.server.console.routes import MAX_STREAMS


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
    each text of the event list a page opens with, of the conversation list and of the
    conversation's view."""
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
        "conversation": {"id": "c-1"},
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
    assert len(view.content) < 100_000
    (said,) = view.json()["thread"]
    assert said["text"] == "n" * (MAX_THREAD_TEXT - 1) + "…"
    assert len(view.json()["client"]["name"]) == MAX_THREAD_TEXT
    assert len(found.content) < 50_000
    assert [c["id"] for c in found.json()["conversations"]] == ["web:c-1"]
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
