"""Two changes of one conversation made at once on PostgreSQL both stay.

PostgreSQL runs several transactions at once (READ COMMITTED): a change that reads the
conversation, changes it and writes it back must not write over a change committed in between
(a lost update). Two kinds of writers meet on a conversation: an action's job (``tag``, ``set``,
``assign`` run by the dispatcher) and a change whose calls are replayed when it is committed
(:mod:`rulekit.runtime.planning`: webhooks, console edits, timers). Here one of them is held
between its read and its write while the other is made: once the other has committed, or waits
for the held one, the held one goes on; both changes must be in the stored conversation.

A conversation not stored yet has no row to hold: two changes creating it at once must both
stay too (a job on the generic webhook's conversation, or a console edit, racing the first
webhook or another job).

SQLite runs one writer at a time: nothing to hold there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from action_helpers import make_config, make_context, make_event
from pydantic import BaseModel

from rulekit.actions.base import Action
from rulekit.actions.set_state import SetParams, SetState
from rulekit.actions.tag import Tag, TagParams
from rulekit.event import Client, Conversation, Event
from rulekit.runtime import planning
from rulekit.runtime.worker import Refusal
from rulekit.store.base import State
from rulekit.store.cached import holding

Change = Callable[["HoldsOneTransaction", bool], None]
"""A change of the conversation, made through ``holds`` (``True``: held after its read)."""

CHANNEL, KEY, CONVERSATION = "online-chat", "client-key", "conv-1"
READS = ("read_many", "find_conversation", "conversation_by_id_text", "get_conversation")


class _HeldAfterRead:
    """A transaction's state that, after its first read of a conversation, tells ``read`` and
    waits for ``go``."""

    def __init__(self, state: Any, holds: HoldsOneTransaction) -> None:
        self._state = state
        self._holds = holds

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._state, name)
        if name not in READS or self._holds.read.is_set():
            return found

        def read(*args: Any, **kwargs: Any) -> Any:
            answer = found(*args, **kwargs)
            self._holds.pid = self._state.conn.info.backend_pid
            self._holds.read.set()
            assert self._holds.go.wait(30)
            return answer

        return read


class HoldsOneTransaction:
    """Opens transactions on ``store``; the next one opened after :meth:`hold_next` is held
    after its first read of a conversation (on its database connection, :attr:`pid`)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.read = threading.Event()
        self.go = threading.Event()
        self.pid: int | None = None
        self._next = False

    def hold_next(self) -> None:
        self._next = True

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        held, self._next = self._next, False
        with self.store.transaction() as state:
            yield _HeldAfterRead(state, self) if held else state

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def seed(store: Any) -> None:
    with store.transaction() as state:
        conversation = Conversation(id=CONVERSATION, status="open", tags=["vip"])
        state.save_conversation(CHANNEL, KEY, conversation)


def stored(store: Any) -> Conversation:
    with store.transaction() as state:
        found = state.find_conversation(CHANNEL, CONVERSATION)
    assert found is not None
    return found[1]


def job(action: Action, params: BaseModel) -> Change:
    """``action`` run as a job, as the dispatcher runs it."""

    def change(holds: HoldsOneTransaction, held: bool) -> None:
        if held:
            holds.hold_next()
        context = make_context(make_event(), make_config(), store=holds)
        asyncio.run(action.execute(params, context))

    return change


def replayed(action: Action, params: BaseModel) -> Change:
    """``action``'s change as the console makes it: made on the state in a transaction rolled
    back, then replayed and recorded in one that commits (``held``: the first such), made anew
    when the state changed meanwhile."""
    config = make_config()

    def parse(state: State) -> list[Event]:
        cause = make_event(event="updated")
        return action.change_state(params, cause, state, config).emitted

    def change(holds: HoldsOneTransaction, held: bool) -> None:
        while True:
            prepared = planning.prepare(holds.store, parse)
            if held:
                holds.hold_next()
                held = False
            try:
                with holds.transaction() as state:
                    planning.record(state, prepared, Refusal("not evaluated"), inbox_id=None)
            except planning.StateChanged:
                continue
            return

    return change


def in_thread(work: Callable[[], None]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, errors


def waits_for(url: str, pid: int) -> bool:
    """Whether a connection to the database waits for a lock ``pid``'s transaction holds."""
    import psycopg

    from rulekit.store.postgres import split_url

    with psycopg.connect(split_url(url)[0], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (pid,)
        ).fetchone()
    return bool(row and row[0])


def one_held_while_the_other_runs(
    url: str,
    held: Change,
    other: Change,
    *,
    stored_before: bool = True,
    after: Callable[[Any], Any] = stored,
) -> Any:
    """``held`` is held after its read while ``other`` runs (until ``other`` is done or waits
    for ``held``); ``after`` the store once both are done: the stored conversation
    (``stored_before``: with ``vip``, else none)."""
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        if stored_before:
            seed(store)
        holds = HoldsOneTransaction(store)
        first, first_errors = in_thread(lambda: held(holds, True))
        try:
            assert holds.read.wait(30), "the held change never read the conversation"
            assert holds.pid is not None
            second, second_errors = in_thread(lambda: other(holds, False))
            for _ in range(3000):  # until the other is done, or waits for the held one
                second.join(0.01)
                if not second.is_alive() or waits_for(url, holds.pid):
                    break
            else:
                raise AssertionError("the other change neither finished nor waited")
        finally:
            holds.go.set()
            first.join(30)
        second.join(30)
        assert not first.is_alive() and not second.is_alive()
        assert first_errors == [] and second_errors == []
        return after(store)
    finally:
        store.close()


SET_URGENT = (SetState(), SetParams(priority="urgent"))
UNTAG_VIP = (Tag(), TagParams(remove=["vip"]))


@pytest.mark.parametrize(
    ("held", "other"),
    [
        # the dispatcher's `set` (a rule's answer to `vip` being added) read the conversation
        # with `vip`; an agent removes `vip` meanwhile: the job must not put it back
        (job(*SET_URGENT), replayed(*UNTAG_VIP)),
        # the agent's removal, replayed, read the conversation before the job set its priority
        (replayed(*UNTAG_VIP), job(*SET_URGENT)),
        # two jobs (two daemons, two lanes)
        (job(*SET_URGENT), job(*UNTAG_VIP)),
        # two replayed changes (two daemons, or a webhook and an agent)
        (replayed(*UNTAG_VIP), replayed(*SET_URGENT)),
    ],
    ids=["job-then-replayed", "replayed-then-job", "job-then-job", "replayed-then-replayed"],
)
def test_a_change_committed_between_a_read_and_its_write_stays(
    postgres_url: str, held: Change, other: Change
) -> None:
    after = one_held_while_the_other_runs(postgres_url, held, other)
    assert (after.tags, after.priority) == ([], "urgent")


TAG_NEW = (Tag(), TagParams(add=["new"]))


@pytest.mark.parametrize(
    ("held", "other"),
    [
        (job(*SET_URGENT), replayed(*TAG_NEW)),
        (replayed(*TAG_NEW), job(*SET_URGENT)),
        (job(*SET_URGENT), job(*TAG_NEW)),
        (replayed(*TAG_NEW), replayed(*SET_URGENT)),
    ],
    ids=["job-then-replayed", "replayed-then-job", "job-then-job", "replayed-then-replayed"],
)
def test_two_changes_creating_a_conversation_at_once_both_stay(
    postgres_url: str, held: Change, other: Change
) -> None:
    after = one_held_while_the_other_runs(postgres_url, held, other, stored_before=False)
    assert (after.tags, after.priority) == (["new"], "urgent")


def client_change(**fields: str) -> Change:
    """The client record read, changed and written back in one transaction, as a webhook's
    replay does (created when none is stored)."""

    def change(holds: HoldsOneTransaction, held: bool) -> None:
        if held:
            holds.hold_next()
        with holding(holds) as state:
            known = state.get_client(CHANNEL, "client-1") or Client(id="client-1")
            state.save_client(CHANNEL, known.model_copy(update=fields))

    return change


def stored_client(store: Any) -> Client | None:
    with store.transaction() as state:
        found: Client | None = state.get_client(CHANNEL, "client-1")
    return found


def test_two_changes_creating_a_client_record_at_once_both_stay(postgres_url: str) -> None:
    after = one_held_while_the_other_runs(
        postgres_url,
        client_change(name="Mia"),
        client_change(email="mia@example.com"),
        stored_before=False,
        after=stored_client,
    )
    assert after is not None
    assert (after.name, after.email) == ("Mia", "mia@example.com")
