"""The gap notice of a stream that fell behind counts only what its viewer would have received:
messages of channels an agent cannot see are lost to them unnoticed, for their number would
tell how busy those channels are. A real console on uvicorn, its live feed flooded in one turn
of the event loop so that the stream's queue overflows."""

from __future__ import annotations

import threading
from typing import Any

from console_helpers import ConsoleServer, messages, opened

from rulekit.runtime.feed import DEFAULT_BACKLOG

END = {"type": "reload", "ok": True, "version": "end-marker"}


def event(channel: str, n: int) -> dict[str, Any]:
    return {"type": "event", "event_id": f"{channel}:{n}", "channel": channel, "event": "created"}


def flood(server: ConsoleServer, burst: list[dict[str, Any]]) -> None:
    """Publish ``burst`` at once: no stream reads in between."""
    done = threading.Event()

    def publish() -> None:
        for message in burst:
            server.feed.publish(message)
        done.set()

    server.loop.call_soon_threadsafe(publish)
    assert done.wait(30)


def gaps_until_end(lines: Any) -> tuple[list[int], list[dict[str, Any]]]:
    gaps, seen = [], []
    for message in messages(lines):
        if message.get("type") == "gap":
            gaps.append(message["dropped"])
        elif message == {**END, "seq": message.get("seq")}:
            return gaps, seen
        else:
            seen.append(message)
    raise AssertionError("the stream ended early")


def test_the_gap_counts_only_the_messages_the_agent_may_see(console_server: ConsoleServer):
    mine = [event("online-chat", n) for n in range(300)]
    theirs = [event("webhook", n) for n in range(DEFAULT_BACKLOG + 500)]  # Bob's channel
    # lost: the oldest 805 = Ann's 300, then 505 of the webhook channel she cannot see
    burst = [*mine, *theirs, *[event("online-chat", 1000 + n) for n in range(5)], END]
    with (
        console_server.client("ann") as ann,
        console_server.client("admin") as admin,
        ann.stream("GET", "/console/stream") as ann_stream,
        admin.stream("GET", "/console/stream") as admin_stream,
    ):
        ann_lines = opened(ann_stream.iter_lines())
        admin_lines = opened(admin_stream.iter_lines())
        console_server.publish({"type": "reload", "ok": True, "version": "start"})
        for lines in (ann_lines, admin_lines):
            assert next(messages(lines))["version"] == "start"
        flood(console_server, burst)
        gaps, seen = gaps_until_end(ann_lines)
        assert gaps == [300]
        assert {m["channel"] for m in seen} == {"online-chat"}
        gaps, _ = gaps_until_end(admin_lines)
        assert gaps == [len(burst) - DEFAULT_BACKLOG]  # the admin sees every channel


def test_an_agent_who_lost_only_other_channels_messages_is_told_of_no_gap(
    console_server: ConsoleServer,
):
    burst = [*[event("webhook", n) for n in range(DEFAULT_BACKLOG * 2)], event("online-chat", 1)]
    with console_server.client("ann") as ann, ann.stream("GET", "/console/stream") as stream:
        lines = opened(stream.iter_lines())
        console_server.publish({"type": "reload", "ok": True, "version": "start"})
        assert next(messages(lines))["version"] == "start"
        flood(console_server, [*burst, END])
        gaps, seen = gaps_until_end(lines)
        assert gaps == [] and [m["event_id"] for m in seen] == ["online-chat:1"]
