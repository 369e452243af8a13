"""A long conversation read a page at a time, on SQLite and PostgreSQL against a running
daemon: the latest page, older pages by their cursor, and what is new since the newest event
a page holds. Pages chain without a gap or a repeat while the client writes on, each stays
within its bounds however long the messages, and an agent without the channel is told what
they are told of a conversation that does not exist."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from scaffold import make_event
from workspace_helpers import CONVERSATION, VISITOR, Workspace, path, workspace

from rulekit.server.console.conversations import PAGE_BYTES, PAGE_EVENTS, READ_BUDGET
from rulekit.store.records import NewEvent

pytest.importorskip("rulekit_chatra")

__all__ = ["workspace"]


def messages(first: int, count: int, text: str = "message {n}") -> list[NewEvent]:
    return [
        NewEvent(
            make_event(
                event="message",
                conversation={"id": CONVERSATION},
                client={"id": VISITOR},
                message={"id": f"m{n}", "text": text.format(n=n), "author": "client"},
                id=f"online-chat:msg:m{n}",
            ),
            None,
            {},
        )
        for n in range(first, first + count)
    ]


def record(site: Workspace, events: list[NewEvent]) -> None:
    with site.daemon.store.transaction() as state:
        state.record_events(events)


def page(client: httpx.Client, **cursor: str) -> dict[str, Any]:
    answer = client.get(path(), params=cursor)
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def texts(data: dict[str, Any]) -> list[str]:
    return [entry["text"] for entry in data["thread"]]


def test_pages_chain_without_gaps_or_repeats_while_the_client_writes_on(
    workspace: Workspace,
) -> None:
    record(workspace, messages(0, 1200))
    written = 1200
    with workspace.client("anna") as anna:
        latest = page(anna)
        assert len(latest["events"]) == PAGE_EVENTS
        assert texts(latest) == [f"message {n}" for n in range(1100, 1200)]  # oldest first
        assert latest["events"][0]["event_id"] == "online-chat:msg:m1199"
        assert latest["older"] == "online-chat:msg:m1100" and latest["newer"] is None
        read = texts(latest)
        newest = latest["events"][0]["event_id"]
        older = latest["older"]
        pages = 1
        while older is not None:
            record(workspace, messages(written, 7))  # arrives between two reads
            written += 7
            before = page(anna, before=older)
            assert len(before["events"]) <= PAGE_EVENTS
            read = texts(before) + read
            older = before["older"]
            pages += 1
        assert pages == 12
        assert read == [f"message {n}" for n in range(1200)]  # from the very first

        # what is new since the newest event the page has, and only that
        fresh: list[str] = []
        cursor: str | None = newest
        while cursor is not None:
            after = page(anna, after=cursor)
            assert after["older"] is None
            fresh += texts(after)
            cursor = after["newer"]
            if cursor is None and after["events"]:
                newest = after["events"][0]["event_id"]
        assert fresh == [f"message {n}" for n in range(1200, written)]
        assert newest == f"online-chat:msg:m{written - 1}"
        assert page(anna, after=newest)["events"] == []  # nothing new since


def test_more_new_events_than_a_page_come_in_pages_oldest_first(workspace: Workspace) -> None:
    record(workspace, messages(0, 1))
    record(workspace, messages(1, PAGE_EVENTS + 30))
    with workspace.client("anna") as anna:
        first = page(anna, after="online-chat:msg:m0")
        assert texts(first) == [f"message {n}" for n in range(1, PAGE_EVENTS + 1)]
        assert first["newer"] == f"online-chat:msg:m{PAGE_EVENTS}"
        second = page(anna, after=first["newer"])
        assert texts(second) == [f"message {n}" for n in range(PAGE_EVENTS + 1, PAGE_EVENTS + 31)]
        assert second["newer"] is None


def test_a_page_of_long_messages_stays_within_its_bytes(workspace: Workspace) -> None:
    long = "é{n:05d}" + "é" * 19_994  # 20,000 characters, 2 bytes each in UTF-8
    record(workspace, messages(0, 300, long))
    with workspace.client("anna") as anna:
        read: list[str] = []
        older: str | None = None
        sizes = []
        while True:
            answer = anna.get(path(), params={"before": older} if older else {})
            assert answer.status_code == 200, answer.text
            sizes.append(len(answer.content))
            data = answer.json()
            assert 0 < len(data["events"]) < PAGE_EVENTS
            read = texts(data) + read
            older = data["older"]
            if older is None:
                break
        assert max(sizes) <= PAGE_BYTES + 50_000  # (the panel and the page's own fields)
        assert len(sizes) > 3
        assert read == [long.format(n=n) for n in range(300)]


def test_a_page_of_huge_messages_reads_only_what_it_can_show(workspace: Workspace) -> None:
    """Messages of a megabyte, cut to 20,000 characters in the page: a page reads no more of
    them than its budget of stored bytes, and the pages still reach the first."""
    huge = "{n:03d}" + "h" * (1_000_000 - 3)
    record(workspace, messages(0, 20, huge))
    with workspace.client("anna") as anna:
        read: list[str] = []
        older: str | None = None
        counts = []
        while True:
            data = page(anna, **({"before": older} if older else {}))
            counts.append(len(data["events"]))
            read = texts(data) + read
            older = data["older"]
            if older is None:
                break
    assert max(counts) <= READ_BUDGET // 1_000_000
    assert [text[:3] for text in read] == [f"{n:03d}" for n in range(20)]
    assert all(len(text) == 20_000 and text.endswith("…") for text in read)


def test_an_agent_without_the_channel_is_told_no_such_conversation(
    workspace: Workspace,
) -> None:
    record(workspace, messages(0, 150))
    with workspace.client("anna") as anna:
        cursor = page(anna)["older"]
    assert cursor is not None
    with workspace.client("boris") as boris:
        for params in ({}, {"before": cursor}, {"after": cursor}):
            for target in (path(), f"conversations/online-chat/{quote(CONVERSATION, safe='')}"):
                answer = boris.get(target, params=params)
                assert answer.status_code == 404, (target, params, answer.text)
                assert answer.json() == {"error": "no such conversation"}
            unknown = boris.get(path("online-chat:nobody"), params=params)
            assert (unknown.status_code, unknown.json()) == (404, answer.json())


def test_a_cursor_must_name_an_event_of_the_conversation(workspace: Workspace) -> None:
    record(workspace, messages(0, 3))
    other = make_event(
        event="message",
        conversation={"id": "online-chat:other"},
        client={"id": "other"},
        message={"id": "o1", "text": "elsewhere", "author": "client"},
        id="online-chat:msg:o1",
    )
    record(workspace, [NewEvent(other, None, {})])
    with workspace.client("anna") as anna:
        for params in (
            {"before": "online-chat:msg:o1"},
            {"after": "online-chat:msg:o1"},
            {"before": "nothing"},
            {"before": "online-chat:msg:m1", "after": "online-chat:msg:m0"},
            {"page": "2"},
        ):
            answer = anna.get(path(), params=params)
            assert answer.status_code == 400, (params, answer.text)
        assert texts(page(anna, before="online-chat:msg:m2")) == ["message 0", "message 1"]
