"""What the console reads from the daemon's journal: recent events with their jobs, dead
letters, and the live feed's recent messages as the journal now tells them.

Plain blocking functions over a :class:`~rulekit.store.base.JournaledStore` (call them in a
worker thread from async code); each reads in one read-only transaction
(:meth:`~rulekit.store.base.JournaledStore.reading`), which never holds up the daemon's
writes, and by index, however long the history.
"""

from __future__ import annotations

from typing import Any

from rulekit.directory import Directory
from rulekit.runtime.planning import preview
from rulekit.server.console.sessions import Viewer
from rulekit.server.console.team import READ, TeamView
from rulekit.store.base import JournaledStore
from rulekit.store.records import EventRecord, Job

HISTORY_LIMIT = 50
MAX_LISTED_TEXT = 1_000
"""Characters of each text of an event's data the event list carries (the conversation's
thread, ``rulekit why`` have them whole): fifty clients' messages of 4 MB made each opening
of a console page a 200 MB answer."""


def recent(
    store: JournaledStore, viewer: Viewer, directory: Directory
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Recent events the viewer may see (with their jobs, and the team their rules read as
    the viewer may see it in ``directory``), and the dead letters likewise."""
    team = TeamView(viewer, directory)
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
        events = [event_summary(r, jobs[r.event_id], team) for r in records]
        dead = []
        # by channel in the store too: a filter after the limit lost the agent's behind others'
        channels = None if viewer.admin else viewer.channels
        for job in state.dead_jobs(channels=channels, limit=HISTORY_LIMIT):
            record = state.get_event(job.event_id)
            channel = record.channel if record else None
            dead.append({**job_summary(job), "channel": channel})
    return events, dead


def as_stored(store: JournaledStore, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recent live-feed messages, kept in memory, as the journal tells them now: what they quote
    of a client (the name, the start of the text, the email the rules read, an action's error)
    is read again from the event or job they name, so that a client erased since (``rulekit
    forget``) is not replayed from memory; a message whose event or job is no longer stored
    (retention) is left out. Other messages are as they were."""
    shown: list[dict[str, Any]] = []
    with store.reading() as state:
        for message in messages:
            kind, event_id = message.get("type"), message.get("event_id")
            job_id = message.get("job_id")
            if kind == "event" and isinstance(event_id, str):
                record = state.get_event(event_id)
                if record is not None:
                    shown.append(_event_message(message, record))
            elif kind in ("action", "dead_letter") and isinstance(job_id, int):
                job = state.get_job(job_id)
                if job is not None:
                    attempts = state.attempts(job.id)
                    number = message.get("attempt")
                    found = (
                        attempts[number - 1]
                        if isinstance(number, int) and 0 < number <= len(attempts)
                        else None
                    )
                    error = found.error if found is not None else job.last_error
                    shown.append({**message, "error": error})
            else:
                shown.append(message)
    return shown


def _event_message(message: dict[str, Any], record: EventRecord) -> dict[str, Any]:
    client = record.data.get("client") or {}
    text = (record.data.get("message") or {}).get("text")
    shown = {
        **message,
        "client_name": preview(client.get("name") or client.get("display_name")),
        "text": preview(text),
    }
    if READ in message:
        email = client.get("email")
        shown[READ] = {"seen": record.trace.get("team"), "client_email": preview(email)}
    return shown


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


def event_summary(record: EventRecord, jobs: list[Job], team: TeamView) -> dict[str, Any]:
    """An event of the event list (or of a conversation's events) with its jobs, and what its
    rules read of the team (``team``), as ``team``'s viewer may see them (the agents they may
    not see unnamed)."""
    summary = {
        "type": "event",
        "event": shortened(team.event(record.data)),
        "processed_at": record.processed_at.isoformat(),
        "jobs": [job_summary(job) for job in jobs],
    }
    client = record.data.get("client")
    client_email = client.get("email") if isinstance(client, dict) else None
    lines = team.summary(record.trace.get("team"), client_email)
    if lines:  # the presence the rules read deciding about it
        summary["team"] = lines
    return summary


def shortened(data: Any, limit: int = MAX_LISTED_TEXT) -> Any:
    """``data`` with every text over ``limit`` characters cut to ``limit``, ending ``…``
    (no recursion: stored data may nest deep)."""
    if isinstance(data, str):
        return data if len(data) <= limit else data[: limit - 1] + "…"
    if not isinstance(data, dict | list):
        return data
    root: list[Any] = [data]
    pending: list[tuple[Any, list[Any] | dict[Any, Any], Any]] = [(data, root, 0)]
    while pending:
        value, parent, key = pending.pop()
        if isinstance(value, dict):
            copy: Any = {}
            for child_key, child in value.items():
                copy[child_key] = child
                pending.append((child, copy, child_key))
        elif isinstance(value, list):
            copy = list(value)
            pending.extend((child, copy, index) for index, child in enumerate(value))
        elif isinstance(value, str) and len(value) > limit:
            copy = value[: limit - 1] + "…"
        else:
            copy = value
        parent[key] = copy
    return root[0]
