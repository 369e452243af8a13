"""A plan's ``tag`` and ``set`` are made in the transaction that records its event, in plan
order, and noted in their jobs, which hand their ``updated`` events over when they run (real
SQLite): a change the config refuses is noted as such and fails its job, the later changes made
all the same; and nothing of it is kept when that transaction does not commit (a crash), the
record made again making the same changes with the same events."""

from __future__ import annotations

import asyncio

import pytest

from rulekit.actions.base import ActionContext
from rulekit.actions.set_state import SetState
from rulekit.actions.tag import Tag
from rulekit.config import Config, RawConfig
from rulekit.errors import PermanentActionError
from rulekit.event import Event
from rulekit.runtime import planning
from rulekit.runtime.changes import Changes
from rulekit.runtime.worker import Evaluation
from rulekit.store.records import JobSpec
from rulekit.store.sqlite import SQLiteStore

PLAN = [
    JobSpec("Greet", "autoreply", {"text": "Hello"}, "autoreply", "conversation:web:c1"),
    JobSpec("Tier", "tag", {"add": ["vip"]}, "tag", "changes:web:c1"),
    JobSpec("Tier", "tag", {"add": ["gold"]}, "tag", "changes:web:c1"),  # not in tags:
    JobSpec("Tier", "set", {"priority": "high"}, "set", "changes:web:c1"),
    JobSpec("Tier", "tag", {"remove": ["vip"]}, "tag", "changes:web:c1"),
    JobSpec("Tier", "tag", {"add": ["vip"]}, "tag", "changes:web:c1"),
]


class Crash(Exception):
    pass


def event() -> Event:
    return Event(
        id="web:1",
        channel="web",
        event="created",
        conversation={"id": "c1", "status": "open"},
        client={"id": "client-1"},
    )


def record(store: SQLiteStore, changes: Changes, *, crash: bool = False) -> None:
    cause = event()
    prepared = planning.prepare(store, None, [cause])
    answer = [Evaluation(cause.id, list(PLAN), {}, ["Greet", "Tier"], [], [])]
    with store.transaction() as state:
        planning.record(state, prepared, answer, inbox_id=None, changes=changes)
        if crash:
            raise Crash


def handed_over(store: SQLiteStore, config: Config, job_id: int) -> list[Event]:
    """The events the job's call hands over, as the dispatcher makes it."""
    with store.transaction() as state:
        job = next(j for j in state.jobs(event_id="web:1") if j.id == job_id)
    action = Tag() if job.action == "tag" else SetState()
    context = ActionContext(event=event(), config=config, store=store, job_id=job.id)
    asyncio.run(action.execute(action.Params.model_validate(job.params), context))
    return context.emitted


def test_changes_are_made_as_their_event_is_recorded(tmp_path) -> None:
    config = Config(raw=RawConfig(tags=["vip"]))
    changes = Changes({"tag": Tag(), "set": SetState()}, config)
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    try:
        with pytest.raises(Crash):  # the daemon dies before the record commits: nothing kept
            record(store, changes, crash=True)
        with store.transaction() as state:
            assert state.find_conversation("web", "c1") is None
            assert not state.jobs(event_id="web:1")
        record(store, changes)
        with store.transaction() as state:
            _, conversation = state.find_conversation("web", "c1")
            jobs = state.jobs(event_id="web:1")
            # nothing done yet: every job waits, the changes noted in theirs
            assert [j.status for j in jobs] == ["pending"] * 6
            assert [state.applied_change(j.id) is not None for j in jobs] == [False] + [True] * 5
        assert conversation.tags == ["vip"] and conversation.priority == "high"
        with pytest.raises(PermanentActionError, match="unknown tag 'gold'"):
            handed_over(store, config, jobs[2].id)
        events = [handed_over(store, config, jobs[n].id) for n in (1, 3, 4, 5)]
        assert [len(each) for each in events] == [1, 1, 1, 1]
        assert events[1][0].changed["priority"] == {"from": None, "to": "high"}
        tags = [each[0].changed["tags"] for each in events]
        assert [(t["added"], t["removed"]) for t in tags] == [
            (["vip"], []),
            ([], []),
            ([], ["vip"]),
            (["vip"], []),
        ]
        ids = [e.id for each in events for e in each]
        assert len(set(ids)) == 4  # the tag added twice: two events
        # handed over again (a crash before its outcome was recorded): the same events
        assert [e.id for e in handed_over(store, config, jobs[1].id)] == ids[:1]
    finally:
        store.close()
