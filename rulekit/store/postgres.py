"""The PostgreSQL store: several ``rulekit run`` daemons sharing one database.

Selected by a storage URL such as ``postgresql://rulekit@db.internal:5432/rulekit``. Besides
libpq's own parameters (``sslmode``, ``connect_timeout``, ``application_name``, …) the URL takes:

* ``schema`` — the schema holding rulekit's tables (created when missing; default: the server's
  ``search_path``, usually ``public``), so one database can serve several teams or tests;
* ``pool_size`` — the most connections this process opens (default 10);
* ``pool_timeout`` — seconds to wait for a connection before the store is unavailable (10);
* ``lock_timeout`` — seconds a statement waits for a lock another session holds (a table
  locked by hand, a row another transaction changes) before the store is unavailable (5);
* ``idle_timeout`` — seconds a transaction may wait between two statements before the server
  ends it, and its locks with it (60).

Without ``lock_timeout`` a webhook's insert waited as long as another session held a lock on
the inbox: the sender got no answer at all (not the 503 that makes it retry), and every writer
of the daemon waited behind it. Migrations wait for their locks as long as it takes. Without
``idle_timeout`` a daemon frozen inside a transaction (stopped, its machine paused) held the job
claims' lock, and every other daemon's claims waited for it for ever; rulekit's transactions
wait on nothing but the database between their statements.

Transactions: each :meth:`PostgresStore.transaction` block takes one connection from a
psycopg_pool pool, runs ``BEGIN … COMMIT`` (``ROLLBACK`` on an exception) and hands it back.
The isolation level is PostgreSQL's default, READ COMMITTED; the statements are written for it
(claims lock their rows with ``FOR UPDATE SKIP LOCKED``, counters are single upserts).

A pooled connection the server ended while it lay idle (``pg_terminate_backend``, a restart or
a failover of the server) is noticed when it is taken from the pool, without a round trip: the
server's goodbye waits on its socket. It is closed and another one taken, so one such event
costs no transaction (each idle connection used to fail the next transaction given it: a 503
to a webhook, a processor round lost, for up to ``pool_size`` transactions in a row).

Migrations are applied when the store opens, inside one transaction holding an advisory lock
on the schema, so N daemons starting at once apply each step once; a schema newer than this
rulekit is refused.

Errors that mean "cannot persist right now" (server unreachable or shutting down, pool
exhausted past ``pool_timeout``, disk full, a read-only standby) are raised as
:class:`~rulekit.errors.StoreUnavailable`; the daemon answers 503 to webhooks meanwhile.

psycopg and psycopg_pool are imported here only (the ``postgres`` extra): SQLite users do not
need them.
"""

from __future__ import annotations

import logging
import re
import select
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from rulekit.errors import StoreError, StoreUnavailable
from rulekit.store.base import JournaledStore
from rulekit.store.listener import OwnBackends
from rulekit.store.migrations import SchemaStatus, status_of
from rulekit.store.migrations.postgres import MIGRATIONS
from rulekit.store.sql.postgres import PostgresState
from rulekit.store.sql.postgres_dialect import unavailable_error
from rulekit.store.urls import redact_url

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

STORE_OPTIONS = ("schema", "pool_size", "pool_timeout", "lock_timeout", "idle_timeout")
"""URL parameters rulekit reads itself; every other one goes to libpq."""

DEFAULT_POOL_SIZE = 10
WRITERS = 4
"""Group-commit transactions under way at once (at most half the pool)."""
DEFAULT_POOL_TIMEOUT = 10.0
DEFAULT_LOCK_TIMEOUT = 5.0
"""Seconds a statement waits for another session's lock (as SQLite's busy timeout)."""
DEFAULT_IDLE_TIMEOUT = 60.0
"""Seconds a transaction may wait between two statements before the server ends it."""

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# The advisory lock key space of rulekit's migrations (a constant, so that every rulekit
# agrees); the second key is the schema's hash, so schemas migrate independently.
_MIGRATION_LOCK = 0x72756C65  # "rule"


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """The libpq connection URL and rulekit's own options (``schema``, ``pool_size``, …)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options = {name: value for name, value in query if name in STORE_OPTIONS}
    rest = [(name, value) for name, value in query if name not in STORE_OPTIONS]
    scheme = "postgresql" if parts.scheme.lower() in ("postgres", "postgresql") else parts.scheme
    conninfo = parts._replace(scheme=scheme, query=urlencode(rest)).geturl()
    return conninfo, options


def check_options(url: str, options: Mapping[str, str]) -> None:
    """Refuse option values this store cannot use, naming the URL (without its password)."""
    schema = options.get("schema")
    if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
        raise StoreError(
            f"storage URL {redact_url(url)!r}: schema {schema!r} must be a lower-case SQL name "
            "(letters, digits, underscores; not starting with a digit)"
        )
    numbers = ("pool_size", int), ("pool_timeout", float), ("lock_timeout", float)
    for name, kind in (*numbers, ("idle_timeout", float)):
        if name in options:
            try:
                value = kind(options[name])
            except ValueError:
                value = 0
            if value <= 0:
                raise StoreError(
                    f"storage URL {redact_url(url)!r}: {name} must be a positive number"
                )


def _connect_kwargs(
    schema: str | None, lock_timeout: float | None = None, idle_timeout: float | None = None
) -> dict[str, Any]:
    # Every connection works in UTC and in the store's schema, waits for a lock at most
    # ``lock_timeout`` seconds and is ended by the server when a transaction of it waits
    # ``idle_timeout`` seconds between two statements; set at connection start-up (libpq
    # ``options``), so it costs no round trip per transaction.
    options = "-c timezone=UTC"
    if lock_timeout is not None:
        options += f" -c lock_timeout={_ms(lock_timeout)}"
    if idle_timeout is not None:
        options += f" -c idle_in_transaction_session_timeout={_ms(idle_timeout)}"
    if schema is not None:
        options += f" -c search_path={schema}"
    return {"options": options, "autocommit": False}


_POOL_LOG = logging.getLogger("psycopg.pool")


def _begin_reading(conn: Any, reads_only: bool) -> None:
    """Whether the connection's next transactions begin as one read-only snapshot."""
    import psycopg

    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ if reads_only else None
    conn.read_only = True if reads_only else None


class PostgresStore(JournaledStore):
    """Conversation state and the daemon's journal in a PostgreSQL database (one schema).

    ``upgrade=False`` refuses a schema that is behind instead of migrating it. A schema newer
    than this code always refuses.
    """

    shares_pacing = True
    """Several daemons may send through one database: per-destination pacing is agreed in it."""
    shared = True
    """Several daemons share the database: claims and due times go by its clock."""

    def __init__(
        self,
        url: str,
        *,
        upgrade: bool = True,
        pool_size: int | None = None,
        pool_timeout: float | None = None,
    ) -> None:
        conninfo, options = split_url(url)
        check_options(url, options)
        self.url = redact_url(url)
        self.schema = options.get("schema")
        size = pool_size or int(options.get("pool_size", DEFAULT_POOL_SIZE))
        timeout = pool_timeout or float(options.get("pool_timeout", DEFAULT_POOL_TIMEOUT))
        self.lock_timeout = float(options.get("lock_timeout", DEFAULT_LOCK_TIMEOUT))
        self.idle_timeout = float(options.get("idle_timeout", DEFAULT_IDLE_TIMEOUT))
        self.writers = min(WRITERS, max(size // 2, 1))
        self._holders: set[int] = set()
        self._holders_lock = threading.Lock()
        self._conninfo = conninfo
        self._backends = OwnBackends()
        """The server processes of this store's pooled connections (see :meth:`listen`)."""
        self._pool_size = size
        self._pool_timeout = timeout
        self._pool = self._open_pool(conninfo, size, timeout)
        try:
            self._prepare(upgrade)
        except StoreUnavailable as exc:
            self._pool.close()
            raise self._why_unavailable() or exc from exc
        except BaseException:
            self._pool.close()
            raise

    def _why_unavailable(self) -> StoreUnavailable | None:
        """Why no connection could be made at all, in the server's words (refused, no such
        database, a password refused), from one connection of its own: the pool only says
        that it got none within its timeout. None when this one is made."""
        import psycopg

        try:
            psycopg.connect(
                self._conninfo,
                connect_timeout=max(int(self._pool_timeout), 1),
                **_connect_kwargs(self.schema),
            ).close()
        except psycopg.Error as exc:
            return unavailable_error(self.url, exc)
        return None

    def _open_pool(
        self, conninfo: str, size: int, timeout: float
    ) -> psycopg_pool.ConnectionPool[psycopg.Connection[dict[str, Any]]]:
        # the pool logs each failed connection: to the daemon's log, through the root
        # logger's handler; a command, which has none, says why once, in its error, instead
        # of Python printing each of them
        if not _POOL_LOG.handlers:
            _POOL_LOG.addHandler(logging.NullHandler())
        try:
            import psycopg
            from psycopg.rows import dict_row
            from psycopg_pool import ConnectionPool
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise StoreError(
                "PostgreSQL storage needs psycopg and psycopg_pool: pip install 'rulekit[postgres]'"
            ) from exc
        kwargs = _connect_kwargs(self.schema, self.lock_timeout, self.idle_timeout)
        kwargs |= {"row_factory": dict_row}
        try:
            pool: psycopg_pool.ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
                conninfo,
                connection_class=psycopg.Connection[dict[str, Any]],
                min_size=1,
                max_size=max(size, 1),
                timeout=timeout,
                # a connection that cannot be made is tried again after 1, 2, 4 ... s, and
                # given up after ``timeout``: the next transaction asking starts again at
                # once (the pool's default, five minutes, reached waits of 64 and 128 s: a
                # database back after a minute away was used again up to a minute later)
                reconnect_timeout=timeout,
                kwargs=kwargs,
                name=f"rulekit:{self.url}",
                open=False,
            )
        except psycopg.ProgrammingError as exc:  # a malformed connection string
            raise StoreError(f"storage URL {self.url!r}: {exc}") from None
        pool.open(wait=False)
        return pool

    # opening and migrations ------------------------------------------------------------------
    def _prepare(self, upgrade: bool) -> None:
        with self._connection() as conn:
            status = status_of(_read_version(conn), MIGRATIONS)
            if status.too_new:
                raise _too_new(self.url, status)
            if status.up_to_date:
                return
            if not upgrade:
                raise StoreError(f"PostgreSQL store {self.url}: {status}; run `rulekit db upgrade`")
        self._apply_migrations()

    def _apply_migrations(self) -> SchemaStatus:
        """Apply the pending steps in one transaction holding the schema's advisory lock: the
        version is re-read under the lock, so concurrent openers apply each step once."""
        with self._connection() as conn:
            # another opener's migration, or a daemon's transaction on a table a step alters,
            # is waited for however long it takes (not the store's lock_timeout)
            conn.execute("SET LOCAL lock_timeout = 0")
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, hashtext(COALESCE(%s::text, current_schema())))",
                (_MIGRATION_LOCK, self.schema),
            )
            if self.schema is not None:
                from psycopg import sql

                conn.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL)"
            )
            status = status_of(_read_version(conn), MIGRATIONS)
            if status.too_new:
                raise _too_new(self.url, status)
            for step in MIGRATIONS[status.current :]:
                conn.execute(step.sql.encode())  # several statements: simple query protocol
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, now())",
                    (step.version, step.name),
                )
            conn.commit()
            return status_of(_read_version(conn), MIGRATIONS)

    def schema_status(self) -> SchemaStatus:
        """Where this store's schema stands."""
        with self._connection() as conn:
            return status_of(_read_version(conn), MIGRATIONS)

    # transactions ----------------------------------------------------------------------------
    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        """A pooled connection for one unit of work: committed when the block ends normally,
        rolled back on an exception; connection trouble becomes StoreUnavailable."""
        import psycopg
        from psycopg_pool import PoolClosed

        try:
            conn = self._live_connection()
            try:
                with conn:  # commits, or rolls back on an exception (the pool keeps it open)
                    yield conn
            finally:
                self._pool.putconn(conn)
        except PoolClosed:
            raise StoreError(f"PostgreSQL store {self.url} is closed") from None
        except psycopg.Error as exc:  # PoolTimeout is an OperationalError
            unavailable = unavailable_error(self.url, exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    def _live_connection(self) -> psycopg.Connection[dict[str, Any]]:
        """A connection of the pool that its server has not ended meanwhile: those it did are
        closed (the pool replaces them) and another is taken, within ``pool_timeout``."""
        import psycopg

        deadline = time.monotonic() + self._pool_timeout
        for _ in range(self._pool_size):
            conn = self._pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
            if not _ended(conn):
                return conn
            with suppress(psycopg.Error):
                self._backends.discard(conn.info.backend_pid)
            conn.close()
            self._pool.putconn(conn)
        return self._pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))

    def transaction(self) -> AbstractContextManager[PostgresState]:
        return self._unit(reads_only=False)

    def reading(self) -> AbstractContextManager[PostgresState]:
        """A read-only transaction on one snapshot of the database (``REPEATABLE READ``): every
        statement in it sees the same data, so what a command lists (events, then their jobs
        and attempts) is consistent while daemons write, and it never holds them up. Its
        ``BEGIN`` says so: no round trip more."""
        return self._unit(reads_only=True)

    @contextmanager
    def _unit(self, *, reads_only: bool) -> Iterator[PostgresState]:
        me = threading.get_ident()
        with self._holders_lock:
            if me in self._holders:
                raise StoreError("transactions do not nest: this thread is already inside one")
            self._holders.add(me)
        run = 0
        try:
            with self._connection() as conn:
                # psycopg opens the transaction (BEGIN) with the first statement; the pool
                # commits when the block ends, or rolls back when it raises.
                self._backends.add(conn)
                if reads_only:
                    _begin_reading(conn, True)
                state = PostgresState(conn, self.url)
                try:
                    yield state
                finally:
                    state.active = False
                    run = state.statements
                    if reads_only:  # (the transaction is over: the pool's next user writes)
                        with suppress(Exception):
                            conn.rollback()
                            _begin_reading(conn, False)
        finally:
            with self._holders_lock:
                self._holders.discard(me)
                if run:  # psycopg sent BEGIN before the first, and COMMIT or ROLLBACK after
                    self.statements += run
                    self.transactions += 1

    statements = 0
    """Statements run by this store's transactions (round trips besides BEGIN and COMMIT)."""
    transactions = 0
    """Transactions that ran a statement (each two more round trips: BEGIN and its end)."""

    @property
    def round_trips(self) -> int:
        return self.statements + 2 * self.transactions

    def listen(self, notify: Callable[[str], None]) -> Callable[[], None]:
        """Notices of other processes' new work, on a connection of its own (see
        :mod:`rulekit.store.listener`)."""
        from rulekit.store.listener import WorkListener

        listener = WorkListener(
            self._conninfo, _connect_kwargs(self.schema), notify, self._backends
        ).start()
        return listener.stop

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, schema={self.schema!r})"


def _ms(seconds: float) -> int:
    return max(round(seconds * 1000), 1)


def _ended(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server ended this idle connection. An idle connection's socket has nothing
    to read unless the server said something unasked: mostly its goodbye (``FATAL:
    terminating connection``, then the end of the stream), rarely a notice. Only then is a
    round trip spent to tell which."""
    if conn.closed or conn.broken:
        return True
    poll = select.poll()
    poll.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
    if not poll.poll(0):
        return False
    import psycopg

    try:
        conn.execute("")  # (no transaction: the pool hands connections over idle)
        conn.rollback()
    except psycopg.Error:
        return True
    return False


def _read_version(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present").fetchone()
    if not row or not _value(row):
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) AS v FROM schema_version").fetchone()
    return int(_value(row))


def _value(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def _too_new(url: str, status: SchemaStatus) -> StoreError:
    return StoreError(
        f"PostgreSQL store {url} has schema version {status.current}, newer than this rulekit "
        f"knows ({status.latest}): it was used by a newer rulekit. Upgrade rulekit on every "
        "daemon sharing this database."
    )


def _probe(url: str) -> tuple[str, dict[str, str]]:
    conninfo, options = split_url(url)
    check_options(url, options)
    return conninfo, options


def schema_status(url: str) -> SchemaStatus:
    """Where the schema at ``url`` stands, changing nothing (``rulekit db status``). A missing
    schema is version 0."""
    import psycopg

    conninfo, options = _probe(url)
    try:
        with psycopg.connect(conninfo, **_connect_kwargs(options.get("schema"))) as conn:
            version = _read_version(conn)
            conn.rollback()
    except psycopg.Error as exc:
        unavailable = unavailable_error(redact_url(url), exc)
        if unavailable is None:
            raise
        raise unavailable from exc
    return status_of(version, MIGRATIONS)


def upgrade_schema(url: str) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply pending migrations (``rulekit db upgrade``); return the status before and after."""
    before = schema_status(url)
    PostgresStore(url, upgrade=True, pool_size=1).close()
    return before, schema_status(url)


def drop_schema(url: str) -> None:
    """Drop the URL's schema and everything in it (tests and benchmarks clean up with it)."""
    import psycopg
    from psycopg import sql

    conninfo, options = _probe(url)
    schema = options.get("schema")
    if schema is None:
        raise StoreError("drop_schema needs a URL with ?schema=NAME")
    drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
    with psycopg.connect(conninfo, autocommit=True) as conn:
        # a daemon still at work in the schema may lock its tables in the other order: the
        # server then ends one of the two, and the drop is tried again
        for attempt in range(5):
            try:
                conn.execute(drop)
                return
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
