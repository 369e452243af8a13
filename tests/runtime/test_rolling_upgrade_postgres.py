"""Daemons upgraded one after another on one PostgreSQL database: a job of an action that only
the upgraded daemons have is not dead-lettered by a daemon that has not got it yet; it is left
to a daemon that has.

Runs when ``RULEKIT_TEST_POSTGRES`` names a reachable server; skipped otherwise.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from daemons import wait_for, write_setup
from test_clock_skew_postgres import on_postgres

from rulekit.event import Event
from rulekit.store import JobSpec
from rulekit.testing.fake_telegram import FakeTelegram

NOTIFY = """\
- name: Notify
  on: {channel: online-chat, event: created}
  do:
    - telegram: {chat_id: "-100123", text: "New chat"}
"""
OLDER = """\
- name: Closed
  on: {channel: online-chat, event: closed}
  do:
    - autoreply: {text: "Bye"}
"""


def jobs(url: str) -> list:
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        with store.transaction() as state:
            return state.jobs(limit=100)
    finally:
        store.close()


@pytest.mark.slow
def test_a_job_of_an_action_another_daemon_has_not_installed_yet_waits_for_one_that_has(
    tmp_path, processes, chatra, postgres_url, monkeypatch
):
    """An upgraded daemon enqueued a ``telegram`` job; a daemon without the ``telegram`` action
    (not upgraded yet) took it and dead-lettered it at once ("action 'telegram' is not
    installed"): the message was never sent, although the upgraded daemons could send it. It
    now hands the job back, and the upgraded daemon sends it once it runs."""
    from rulekit.store.postgres import PostgresStore

    (tmp_path / "newer").mkdir()
    (tmp_path / "older").mkdir()
    with FakeTelegram() as telegram:
        newer = write_setup(tmp_path / "newer", NOTIFY, chatra=chatra, telegram=telegram)
        older = write_setup(tmp_path / "older", OLDER, chatra=chatra)
        for config in (newer, older):
            on_postgres(config, postgres_url)
        # what an upgraded daemon recorded before it stopped: an event and its telegram job
        store = PostgresStore(postgres_url)
        try:
            with store.transaction() as state:
                event = Event(
                    id="online-chat:started-1",
                    channel="online-chat",
                    event="created",
                    occurred_at=datetime.now(UTC),
                    conversation={"id": "chat00000001"},
                    client={"id": "client00000001"},
                )
                params = {"chat_id": "-100123", "text": "New chat"}
                job = JobSpec("Notify", "telegram", params, "telegram:-100123")
                state.record_event(event, inbox_id=None, trace={}, jobs=[job])
        finally:
            store.close()
        monkeypatch.setenv("RULEKIT_DISABLE_PLUGINS", "rulekit.actions.telegram")
        behind = processes(older).wait_ready()
        monkeypatch.delenv("RULEKIT_DISABLE_PLUGINS")
        # the daemon without the action meets the job (it claims it, and says so)
        wait_for(lambda: "job 1 " in behind.output(), timeout=30)
        assert [j.status for j in jobs(postgres_url)] == ["pending"], behind.output()
        processes(newer).wait_ready()
        wait_for(lambda: telegram.messages(), timeout=30)
        assert [(m.chat_id, m.text) for m in telegram.messages()] == [("-100123", "New chat")]
        wait_for(lambda: [j.status for j in jobs(postgres_url)] == ["done"], timeout=10)
