"""A dead letter retried twice at once (two agents' Retry, the console and ``rulekit retry``,
two daemons behind a balancer) is made pending once, and so is a set-aside webhook requeued
twice at once. On PostgreSQL (READ COMMITTED) the second retry read the job dead before the
first committed, then made it pending again after a dispatcher had already sent it: the
client got the message twice (and a webhook was processed twice)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from store_backends import event

from rulekit.audit import repair
from rulekit.store import JobSpec
from rulekit.store.postgres import PostgresStore

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class _Paused:
    """A state whose first read of ``name`` is followed by ``meanwhile()``: another daemon's
    work, committed between the read and what the caller does next."""

    def __init__(self, state: Any, name: str, meanwhile: Callable[[], None]) -> None:
        self._state, self._name, self._meanwhile = state, name, meanwhile

    def __getattr__(self, attribute: str) -> Any:
        found = getattr(self._state, attribute)
        if attribute != self._name or self._meanwhile is None:
            return found

        def read(*args: Any, **kwargs: Any) -> Any:
            answer = found(*args, **kwargs)
            meanwhile, self._meanwhile = self._meanwhile, None
            meanwhile()
            return answer

        return read


@pytest.fixture
def daemons(postgres_schema: str) -> Iterator[tuple[PostgresStore, PostgresStore]]:
    first, second = PostgresStore(postgres_schema), PostgresStore(postgres_schema)
    yield first, second
    first.close()
    second.close()


def test_a_dead_letter_retried_twice_at_once_is_sent_once(
    daemons: tuple[PostgresStore, PostgresStore],
) -> None:
    one, other = daemons
    with one.transaction() as state:
        spec = JobSpec("Answer", "autoreply", {"text": "hi"}, "autoreply")
        state.record_event(event("e1"), inbox_id=None, trace={}, jobs=[spec], now=T0)
        (job,) = state.jobs(event_id="e1")
        state.record_attempt(job.id, "dead", error="503", now=T0)

    def retried_and_sent() -> None:  # the first retry, and a dispatcher sending the job
        with one.transaction() as state:
            repair.retry(state, job.id, None)
        with one.transaction() as state:
            (claimed,) = state.claim_jobs("dispatcher", lease=30)
            state.record_attempt(claimed.id, "done", result={"id": "m1"})

    with (
        pytest.raises(repair.NotRepairable, match="no longer a dead letter"),
        other.transaction() as state,
    ):
        repair.retry(_Paused(state, "get_job", retried_and_sent), job.id, None)  # type: ignore[arg-type]
    with other.transaction() as state:
        assert state.get_job(job.id).status == "done"  # type: ignore[union-attr]
        assert state.claim_jobs("another", lease=30) == []


def test_a_set_aside_webhook_requeued_twice_at_once_is_processed_once(
    daemons: tuple[PostgresStore, PostgresStore],
) -> None:
    one, other = daemons
    with one.transaction() as state:
        inbox_id, _ = state.append_inbox("online-chat", b"{}")
        state.finish_inbox(inbox_id, error="ChannelError: no eventName")

    def requeued_and_processed() -> None:
        with one.transaction() as state:
            repair.requeue(state, inbox_id, None)
        with one.transaction() as state:
            (claimed,) = state.claim_inbox("processor", lease=30)
            state.finish_inbox(claimed.id, owner="processor")

    with (
        pytest.raises(repair.NotRepairable, match="no longer set aside"),
        other.transaction() as state,
    ):
        repair.requeue(_Paused(state, "get_inbox", requeued_and_processed), inbox_id, None)  # type: ignore[arg-type]
    with other.transaction() as state:
        assert state.get_inbox(inbox_id).status == "done"  # type: ignore[union-attr]
        assert state.claim_inbox("another", lease=30) == []
