"""What an agent may repair is listed by channel in the store: the newest dead letters and
set-aside webhooks of the agent's channels, however many a busier channel has. The lists took
the newest 1,000 of every channel and kept the agent's: behind 1,000 newer ones of another
channel, an agent's dead letters and set-aside webhooks were not listed, so not retried (and
the console's recent events, behind 50, listed none of the agent's dead letters)."""

from __future__ import annotations

from datetime import UTC, datetime

from store_backends import event

from rulekit.audit import repair
from rulekit.directory import AgentEntry, Directory
from rulekit.server.console import journal
from rulekit.server.console.sessions import Viewer
from rulekit.store import JobSpec

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BUSY = repair.LIST_LIMIT * 10 + 5


def test_an_agents_dead_letters_and_set_aside_webhooks_are_listed_behind_a_busy_channel(
    store,
) -> None:
    with store.transaction() as state:
        state.record_event(
            event("tg-1", channel="telegram"),
            inbox_id=None,
            trace={},
            jobs=[JobSpec("Notify", "slack", {"text": "t"}, "slack:#ops")],
            now=T0,
        )
        (mine,) = state.jobs(event_id="tg-1")
        state.record_attempt(mine.id, "dead", error="400", now=T0)
        inbox_id, _ = state.append_inbox("telegram", b'{"update_id": "x"}')
        state.finish_inbox(inbox_id, error="ChannelError: update_id must be an integer")
        for n in range(BUSY):
            state.record_event(
                event(f"oc-{n}"),
                inbox_id=None,
                trace={},
                jobs=[JobSpec("Notify", "slack", {"text": "o"}, "slack:#ops")],
                now=T0,
            )
            (job,) = state.jobs(event_id=f"oc-{n}")
            state.record_attempt(job.id, "dead", error="400", now=T0)
            other, _ = state.append_inbox("online-chat", b"{}")
            state.finish_inbox(other, error="ChannelError: no eventName")
    with store.transaction() as state:
        dead = repair.dead_letters(state, frozenset({"telegram"}))
        assert [(d["job_id"], d["channel"]) for d in dead] == [(mine.id, "telegram")]
        aside = repair.set_aside(state, frozenset({"telegram"}))
        assert [item["inbox_id"] for item in aside] == [inbox_id]
        # the admin (every channel) and an agent of the busy channel get the newest, capped
        for channels in (None, frozenset({"online-chat", "telegram"})):
            assert len(repair.dead_letters(state, channels)) == repair.LIST_LIMIT
            assert len(repair.set_aside(state, channels)) == repair.LIST_LIMIT
        assert repair.dead_letters(state, frozenset({"web"})) == []
        assert repair.set_aside(state, frozenset()) == []
    # the console's recent events list the agent's dead letters alike
    agent = AgentEntry(email="tom@example.com", groups=[], channels=["telegram"])
    viewer = Viewer(agent.email, None, False, frozenset(agent.channels))
    _, recent_dead = journal.recent(store, viewer, Directory([agent], []))
    assert [(d["job_id"], d["channel"]) for d in recent_dead] == [(mine.id, "telegram")]
