"""Presence through the console over real HTTP: a connected stream makes an agent online, their
own ``away`` is kept, and a closed page runs out on the console's (injected) clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from console_helpers import ANN, TOKENS, ConsoleServer
from test_console_http import open_stream
from workspace_helpers import wait_for

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def statuses(server: ConsoleServer) -> dict[str, str]:
    with server.client() as client:
        answer = client.get(
            "/console/api/presence", headers={"Authorization": f"Bearer {TOKENS['admin']}"}
        )
    assert answer.status_code == 200, answer.text
    return {agent["email"]: agent["status"] for agent in answer.json()["agents"]}


def test_an_open_stream_is_online_away_is_kept_and_a_closed_page_runs_out(
    console_server: ConsoleServer,
) -> None:
    clock = Clock()
    console_server.console.presence.now = clock
    with console_server.store.reading() as state:
        assert state.presence() == {}  # nobody ever signed in: assign does not ask
    assert set(statuses(console_server).values()) == {"offline"}

    with console_server.client("ann") as ann:
        with console_server.store.reading() as state:
            assert state.presence(now=T0) == {"ann@example.com": "offline"}  # signed in
        context, _lines = open_stream(ann, console_server)
        try:
            wait_for(lambda: statuses(console_server)[ANN] == "online", "Ann online")
            json = {"Content-Type": "application/json"}
            answer = ann.post("/console/api/presence", content='{"status": "away"}', headers=json)
            assert answer.json() == {"email": ANN, "status": "away", "presence": "away"}
            assert statuses(console_server)[ANN] == "away"
            answer = ann.post("/console/api/presence", content='{"status": "busy"}', headers=json)
            assert answer.status_code == 400
            answer = ann.post("/console/api/presence", content='{"status": "online"}', headers=json)
            assert answer.json()["presence"] == "online"
            # the stream renews her presence as the clock goes on
            clock.now = T0 + timedelta(hours=1)
            wait_for(lambda: statuses(console_server)[ANN] == "online", "renewed")
        finally:
            context.__exit__(None, None, None)
    clock.now += timedelta(seconds=3 * console_server.console.keepalive + 1)
    assert statuses(console_server)[ANN] == "offline"  # the page closed: it ran out


def test_an_agent_who_signs_out_is_offline_at_once(console_server: ConsoleServer) -> None:
    """Signing out at the end of a shift: ``assign`` must not give the next chats to an agent
    who has left, for the rest of their page's last renewal."""
    clock = Clock()
    console_server.console.presence.now = clock
    with console_server.client("ann") as ann:
        context, _lines = open_stream(ann, console_server)
        try:
            wait_for(lambda: statuses(console_server)[ANN] == "online", "Ann online")
        finally:
            context.__exit__(None, None, None)  # the page goes to the sign-in page
        assert ann.post("/console/logout").status_code == 303
        assert statuses(console_server)[ANN] == "offline"
        with console_server.store.reading() as state:  # as assign reads it
            assert state.presence(now=T0) == {"ann@example.com": "offline"}


def test_the_admin_has_no_presence_and_writes_need_the_consoles_page(
    console_server: ConsoleServer,
) -> None:
    with console_server.client() as client:
        admin = {"Authorization": f"Bearer {TOKENS['admin']}"}
        answer = client.post("/console/api/presence", json={"status": "away"}, headers=admin)
        assert answer.status_code == 400 and "admin has no presence" in answer.text
    with console_server.client("ann") as ann:  # a form post with the cookie: refused
        answer = ann.post("/console/api/presence", data={"status": "away"})
        assert answer.status_code == 403
