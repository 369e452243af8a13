"""What the console reads from the daemon's journal: recent events with their jobs, dead
letters, a conversation with its client panel.

Plain blocking functions over a :class:`~rulekit.store.base.JournaledStore` (call them in a
worker thread from async code); each reads in one read-only transaction
(:meth:`~rulekit.store.base.JournaledStore.reading`), which never holds up the daemon's
writes, and by index, however long the history.
"""

from __future__ import annotations

from typing import Any

from rulekit.server.console.sessions import Viewer
from rulekit.store.base import JournaledStore
from rulekit.store.records import EventRecord, Job
from rulekit.team import seen_summary

HISTORY_LIMIT = 50
CONVERSATION_EVENTS = 500
"""The most events of one conversation shown (its latest)."""


def recent(
    store: JournaledStore, viewer: Viewer
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Recent events the viewer may see (with their jobs), and the dead letters likewise."""
    with store.reading() as state:
        if viewer.admin:
            records = state.history(limit=HISTORY_LIMIT)
        else:  # per channel, so that a busy channel of others never crowds out the agent's
            mine = [
                record
                for channel in sorted(viewer.channels)
                for record in state.history(channel=channel, limit=HISTORY_LIMIT)
            ]
            mine.sort(key=lambda record: record.processed_at, reverse=True)
            records = mine[:HISTORY_LIMIT]
        jobs = state.jobs_of_events([r.event_id for r in records])
        events = [event_summary(r, jobs[r.event_id]) for r in records]
        dead = []
        for job in state.jobs(status="dead", limit=HISTORY_LIMIT):
            record = state.get_event(job.event_id)
            channel = record.channel if record else None
            if viewer.may_see_channel(channel):
                dead.append({**job_summary(job), "channel": channel})
    return events, dead


def conversation(
    store: JournaledStore, channel: str, conversation_id: str
) -> dict[str, Any] | None:
    """A conversation: its state, the client as last known (the client panel) and its events,
    newest first; ``None`` when nothing is known of it."""
    with store.reading() as state:
        try:
            stored = state.find_conversation(channel, conversation_id)
        except NotImplementedError:
            stored = None
        records = state.conversation_events(channel, conversation_id, limit=CONVERSATION_EVENTS)
        if stored is None and not records:
            return None
        conversation: dict[str, Any] = {}
        client: dict[str, Any] = {}
        for record in reversed(records):  # oldest first: later events know more
            conversation.update(known(record.data.get("conversation")))
            client.update(known(record.data.get("client")))
        if stored is not None:
            conversation.update(known(stored[1].model_dump(mode="json")))
        client_id = client.get("id")
        if client_id:
            client_record = state.get_client(channel, client_id)
            if client_record is not None:
                client.update(known(client_record.model_dump(mode="json")))
        jobs = state.jobs_of_events([r.event_id for r in records])
        events = [event_summary(r, jobs[r.event_id]) for r in records]
    return {
        "channel": channel,
        "conversation": {**conversation, "id": conversation_id},
        "client": client,
        "events": events,
    }


def event_channel(store: JournaledStore, event_id: str) -> str | None:
    """The channel of a recorded event, if it was recorded."""
    with store.reading() as state:
        record = state.get_event(event_id)
    return record.channel if record else None


def known(data: Any) -> dict[str, Any]:
    """The fields of a dict that hold something (missing data never hides what is known)."""
    if not isinstance(data, dict):
        return {}
    return {key: value for key, value in data.items() if value not in (None, "", [], {})}


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "event_id": job.event_id,
        "rule": job.rule,
        "action": job.action,
        "destination": job.destination,
        "status": job.status,
        "attempts": job.attempts,
        "error": job.last_error,
    }


def event_summary(record: EventRecord, jobs: list[Job]) -> dict[str, Any]:
    summary = {
        "type": "event",
        "event": record.data,
        "processed_at": record.processed_at.isoformat(),
        "jobs": [job_summary(job) for job in jobs],
    }
    team = seen_summary(record.trace.get("team"))
    if team:  # the presence the rules read deciding about it
        summary["team"] = team
    return summary
