"""The store interface: a :class:`Store` whose transactions read and change :class:`State`,
and the daemon's :class:`Journal` kept beside it.

The stores (SQLite, PostgreSQL, and SQLite in memory for ``rulekit test``) implement it with one
body of SQL (:mod:`rulekit.store.sql`), but nothing here may assume one backend.

All methods are synchronous and are called inside :meth:`Store.transaction`: everything one event
changes is committed together, or not at all.

The daemon also keeps a :class:`Journal` (inbox, audit trail, outbox) in the same store, so that
an event's state changes, its audit record and its action jobs commit in one transaction. Stores
that support it are :class:`JournaledStore`: their transactions yield a :class:`JournaledState`.
The journal's parts have modules of their own: :mod:`rulekit.store.inbox`,
:mod:`rulekit.store.outbox`, :mod:`rulekit.store.timers`, :mod:`rulekit.store.history`,
:mod:`rulekit.store.requests`, :mod:`rulekit.store.sessions`; the conversation state is
:mod:`rulekit.store.state` (imported from here by plugins).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from rulekit.store.history import History
from rulekit.store.inbox import Inbox
from rulekit.store.migrations import SchemaStatus
from rulekit.store.outbox import Outbox
from rulekit.store.records import CallStart
from rulekit.store.requests import RequestKeys
from rulekit.store.sessions import ConsoleSessions
from rulekit.store.state import State
from rulekit.store.timers import Timers

__all__ = [
    "ConsoleSessions",
    "History",
    "Inbox",
    "Journal",
    "JournaledState",
    "JournaledStore",
    "Outbox",
    "RequestKeys",
    "State",
    "Store",
    "Timers",
]


class Store(abc.ABC):
    """A place conversation state lives."""

    writers = 1
    """Transactions worth running at once (the daemon's group commit keeps up to this many
    under way): one for a store that writes one at a time (SQLite); a database server commits
    several concurrently, so that one's round trips and flush to disk do not hold up the
    others."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[State]:
        """A unit of work: changes are kept when the block ends normally, dropped on error."""

    def close(self) -> None:  # noqa: B027 - optional for stores with nothing to release
        """Release resources."""

    def checkpoint(self) -> bool:
        """Make what the last transactions erased leave every side file too (SQLite's
        write-ahead log); true when done (stores without side files have nothing to do)."""
        return True

    @property
    def round_trips(self) -> int | None:
        """Round trips to a database server so far (statements, BEGINs and their ends), for
        ``rulekit_store_round_trips_total``; None for a store in the process (SQLite)."""
        return None

    def problem(self) -> str | None:
        """Why the store cannot be used right now, found cheaply without a transaction (e.g.
        its file was replaced), or None. ``/healthz`` fails while there is one."""
        return None

    def exposure(self) -> str | None:
        """What says that every user of the machine can read the store (a file's mode), or
        None; the daemon warns of it when it starts."""
        return None

    def schema_status(self) -> SchemaStatus | None:
        """Where the store's schema stands now (another process may have upgraded it since
        this one opened it); None for a store without numbered migrations."""
        return None


class Journal(Inbox, Outbox, Timers, History, RequestKeys, ConsoleSessions):
    """The daemon's durable record: raw webhooks in, what was decided, what was done.

    * the **inbox** holds each webhook body from before its 200 until a processor is done with it;
    * the **audit trail** holds each processed event with the engine's trace;
    * the **outbox** holds the action jobs of each plan, and **attempts** every try of each job;
    * the **timers** of timed rules wait there for their due time;
    * the **request keys** of console writes say which requests were made already;
    * the **console's sessions** and its sign-in throttle's counts are shared by its daemons.

    Work is *claimed* with a lease (``owner`` names the claimer, e.g. ``host:pid``): a claim that
    is not finished before the lease ends is handed out again, which is how work of a crashed
    daemon is recovered (at-least-once). Methods that take ``now`` use the current time when it
    is ``None``; tests pass it to be exact. JSON arguments (``params``, ``trace``, ``result``)
    must be JSON-ready data and come back as such.
    """


class JournaledState(State, Journal):
    """What one transaction of a store with a journal can read and change."""

    def log_key(self, *, make: bool = False) -> bytes | None:
        """The store's key for the hashes its daemons' logs name ids by
        (:func:`rulekit.runtime.logs.log_id`), so that a hash cannot be undone by hashing every
        chat id there is; one for every daemon and command on the store. None while there is
        none; with ``make``, one is made at random first if there is none."""
        raise NotImplementedError

    def begin_call(
        self,
        job_id: int,
        owner: str,
        *,
        lease: float,
        paused: Sequence[str] = (),
        conversation: tuple[str, str] | None = None,
    ) -> CallStart:
        """What the dispatcher asks the store right before a call, at once: when none of the
        ``paused`` keys is paused (:meth:`paused_for`), :meth:`start_call`; when the call
        starts and ``conversation`` (channel, id) is given, the conversation as stored
        (:meth:`find_conversation`). Stores on a database server make it one statement."""
        wait = self.paused_for(paused) if paused else 0.0
        if wait > 0:
            return CallStart(False, wait)
        if not self.start_call(job_id, owner, lease=lease):
            return CallStart(False)
        found = None
        if conversation is not None:
            try:
                found = self.find_conversation(*conversation)
            except NotImplementedError:
                found = None
        return CallStart(True, 0.0, found[1] if found is not None else None)


class JournaledStore(Store):
    """A store whose transactions cover both the conversation state and the journal."""

    shared = False
    """Whether several daemons may share the store (a database): its own clock decides when
    claims run out and work falls due (the machines' clocks may disagree), so the daemon passes
    no ``now`` to claims and compares due times with
    :meth:`~rulekit.store.timers.Timers.timers_clock`; and what this daemon's rule set does not
    know may be another's to do (a reload reaches the daemons one after another)."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[JournaledState]:
        """A unit of work over state and journal: kept when the block ends normally, dropped on
        error. Blocks must not do slow I/O (HTTP calls): writers are serialized."""

    def listen(self, notify: Callable[[str], None]) -> Callable[[], None] | None:
        """Call ``notify(queue)`` (from another thread) when another process added work anyone
        may claim now: ``"inbox"``, ``"outbox"`` or ``"timers"``; also once when listening
        (re)starts, for what was added meanwhile. Returns what stops listening, or None when
        the store cannot tell (then the daemon only polls)."""
        return None

    def reading(self) -> AbstractContextManager[JournaledState]:
        """A unit of work that only reads (the console): it never holds writers back where the
        store can avoid it (SQLite reads a snapshot on a connection of its own). Changes made
        in it are an error or dropped. By default, a :meth:`transaction`."""
        return self.transaction()
