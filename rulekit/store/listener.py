"""Hearing about other daemons' work: PostgreSQL's ``LISTEN`` on the schema's work channel.

The schema's triggers (migration ``work_notices``) announce, at commit, each transaction that
added work anyone may claim now: an inbox item, an action job, a timer (new, or handed back).
A :class:`WorkListener` holds one connection of its own that listens on that channel, in a
thread, and passes each notice on, so a daemon takes up what another daemon ingested or
enqueued at once instead of at its next poll. Notices of this process's own transactions are
dropped (the process wakes its workers itself), and each queue is passed on at most ten times
a second (a notice within that gap, at its end). When the connection is lost, the listener
connects again with a backoff, and passes every queue on once it listens again, for what
was announced meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from typing import Any

logger = logging.getLogger("rulekit.store")

QUEUES = ("inbox", "outbox", "timers")
CHANNEL = "SELECT 'rulekit_' || left(md5(current_schema()), 16) AS channel"
"""The schema's channel, as the triggers name it."""
WAIT = 0.5
"""Seconds between checks for :meth:`WorkListener.stop` while no notice comes."""
MAX_BACKOFF = 30.0
GAP = 0.1
"""Seconds between two notices of one queue passed on (see :meth:`WorkListener._pass_on`)."""


class OwnBackends(Collection[int]):
    """The server processes of a store's open connections, whose notices are its own.

    The pool replaces its connections (each after an hour, a broken one at once, an idle one
    beyond the minimum), and the server gives a later connection, maybe another daemon's, a
    process id that was one of them: a set of every id ever seen grows for as long as the
    daemon runs, and would drop that other daemon's notices as this one's. So an id counts
    only while its connection is open, and the closed are forgotten as new ones come."""

    def __init__(self) -> None:
        self._connections: dict[int, weakref.ref[Any]] = {}
        self._lock = threading.Lock()

    def add(self, connection: Any) -> None:
        """``connection`` (a psycopg connection) is the store's, while it is open."""
        with self._lock:
            self._connections[connection.info.backend_pid] = weakref.ref(connection)
            if len(self._connections) > 1:  # a handful: the pool's size at most, once pruned
                closed = [pid for pid, ref in self._connections.items() if not _open(ref)]
                for pid in closed:
                    del self._connections[pid]

    def discard(self, pid: int) -> None:
        with self._lock:
            self._connections.pop(pid, None)

    def __contains__(self, pid: object) -> bool:
        ref = self._connections.get(pid) if isinstance(pid, int) else None
        return ref is not None and _open(ref)

    def __iter__(self) -> Iterator[int]:
        with self._lock:
            return iter([pid for pid, ref in self._connections.items() if _open(ref)])

    def __len__(self) -> int:
        with self._lock:
            return len(self._connections)


def _open(ref: weakref.ref[Any]) -> bool:
    connection = ref()
    return connection is not None and not connection.closed


class WorkListener:
    """Passes the notices of new work on the schema's channel to ``notify(queue)``."""

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: dict[str, Any],
        notify: Callable[[str], None],
        own: Collection[int],
    ) -> None:
        self.conninfo = conninfo
        self.connect_kwargs = connect_kwargs | {"autocommit": True}
        self.notify = notify
        self.own = own
        """Server processes of this process's own connections: their notices are dropped."""
        self.listening = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rulekit-listen", daemon=True)

    def start(self) -> WorkListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (within :data:`WAIT` seconds)."""
        self._stopping.set()
        self._thread.join(WAIT * 4)

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        delay = 0.0
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self.conninfo, **self.connect_kwargs) as conn:
                    row = conn.execute(CHANNEL).fetchone()
                    assert row is not None
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(row[0])))
                    self.listening.set()
                    delay = 0.0
                    self._pass_on(conn, set(QUEUES))  # and what was announced meanwhile
            except psycopg.Error as exc:
                self.listening.clear()
                delay = min(max(delay * 2, 0.5), MAX_BACKOFF)
                logger.warning("not listening for new work (retry in %.1f s): %s", delay, exc)
                self._stopping.wait(delay)
            except Exception:  # a bug in notify: keep listening, keep the traceback
                logger.exception("listening for new work failed")
                self._stopping.wait(1.0)

    def _pass_on(self, conn: Any, pending: set[str]) -> None:
        """Pass each queue's notices on, at most once per :data:`GAP` seconds: a busy
        neighbour commits far more often than an idle daemon needs telling, and each notice
        passed on costs a claim. A notice that comes within the gap is passed on at its end."""
        passed: dict[str, float] = {}
        while not self._stopping.is_set():
            now = time.monotonic()
            for queue in [q for q in pending if now - passed.get(q, -GAP) >= GAP]:
                pending.discard(queue)
                passed[queue] = now
                self.notify(queue)
            wait = WAIT
            if pending:
                wait = max(min(passed[q] + GAP for q in pending) - now, 0.001)
            for notice in conn.notifies(timeout=wait, stop_after=1):
                if notice.pid not in self.own and notice.payload in QUEUES:
                    pending.add(notice.payload)
