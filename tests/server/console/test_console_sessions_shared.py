"""Console sessions and the sign-in throttle live in the store: a browser signed in on one daemon
is signed in on every daemon of the store (PostgreSQL) and after a restart (SQLite); a sign-out
on one daemon ends the session on the others; failed sign-ins made on several daemons are
counted together; what the store holds of a session cannot be used as a cookie."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from console_helpers import CONFIG, console_app, serve
from console_helpers import TOKENS as CONSOLE_TOKENS
from postgres_schemas import schema_url
from scaffold import write
from workspace_helpers import TOKENS, Workspace, running, sha, wait_for

from rulekit.audit.retention import purge
from rulekit.config import RetentionSettings
from rulekit.runtime.feed import LiveFeed
from rulekit.server.console import Console, throttle
from rulekit.server.console.routes import COOKIE
from rulekit.server.console.sessions import REVALIDATE, Sessions, token_hash
from rulekit.server.console.throttle import FREE_FAILURES
from rulekit.snapshot import load_snapshot
from rulekit.store import open_store


def sign_in(daemon: Workspace, token: str) -> httpx.Response:
    return httpx.post(f"{daemon.url}/console/login", data={"token": token}, timeout=10)


def me(daemon: Workspace, cookie: str) -> int:
    """The status of ``/console/api/me`` asked with ``cookie`` as the session cookie."""
    with httpx.Client(base_url=daemon.url, cookies={COOKIE: cookie}, timeout=10) as client:
        return client.get("/console/api/me").status_code


def session_rows(daemon: Workspace) -> list[dict]:
    with daemon.daemon.store.reading() as state:
        rows = state.execute("SELECT * FROM console_sessions").fetchall()
    return [dict(row) for row in rows]


def sign_in_failures(daemon: Workspace) -> list[int]:
    with daemon.daemon.store.reading() as state:
        rows = state.execute("SELECT failures FROM console_sign_ins").fetchall()
    return sorted(int(row["failures"]) for row in rows if row["failures"])


@pytest.mark.slow
def test_a_session_is_every_daemons_and_a_sign_out_on_one_ends_it_on_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rulekit_chatra.testing import FakeChatra

    from rulekit.store.postgres import drop_schema

    # failed sign-ins make the address wait long enough that no pause of this machine's can
    # let the next sign-in through (the database's clock decides, not the test's)
    monkeypatch.setattr(throttle, "FIRST_WAIT", 3600.0)
    monkeypatch.setattr(throttle, "MAX_WAIT", 7200.0)
    storage = schema_url()
    try:
        with FakeChatra() as chatra:
            shared = {"storage": storage, "chatra": chatra}
            with (
                running("postgresql", tmp_path / "a", **shared) as a,
                running("postgresql", tmp_path / "b", **shared) as b,
            ):
                signed_in = sign_in(a, TOKENS["anna"])
                assert signed_in.status_code == 303, signed_in.text
                cookie = signed_in.cookies[COOKIE]
                assert (me(a, cookie), me(b, cookie)) == (200, 200)

                # the store holds a hash of the session id: sent as a cookie, it is nothing
                (row,) = session_rows(a)
                assert cookie not in {str(value) for value in row.values()}
                assert (me(a, row["session_hash"]), me(b, row["session_hash"])) == (401, 401)

                # another session of anna's, on b: signed out on a, it is over on b too
                other = sign_in(b, TOKENS["anna"]).cookies[COOKIE]
                assert me(b, other) == 200  # (b goes by what it read for REVALIDATE seconds)
                out = httpx.post(
                    f"{a.url}/console/logout", cookies={COOKIE: other}, follow_redirects=False
                )
                assert out.status_code == 303
                assert me(a, other) == 401
                wait_for(lambda: me(b, other) == 401, "the sign-out seen by b", 3 * REVALIDATE)
                assert me(b, cookie) == 200  # the first session goes on

                # failures on both daemons are counted together
                for daemon in (a, b, a, b, a)[:FREE_FAILURES]:
                    assert sign_in(daemon, "wrong-token").status_code == 401
                assert sign_in_failures(a) == [FREE_FAILURES]
                refused = sign_in(b, TOKENS["boris"])  # the right token: not looked at
                assert refused.status_code == 429
                assert int(refused.headers["Retry-After"]) > 60
                assert sign_in(a, TOKENS["boris"]).status_code == 429
    finally:
        drop_schema(storage)


def test_a_session_outlives_a_restart_of_its_daemon(tmp_path: Path) -> None:
    with running("sqlite", tmp_path) as daemon:
        signed_in = sign_in(daemon, TOKENS["anna"])
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.cookies[COOKIE]
        ended = sign_in(daemon, TOKENS["anna"]).cookies[COOKIE]
        out = httpx.post(f"{daemon.url}/console/logout", cookies={COOKIE: ended})
        assert out.status_code == 303
        for _ in range(FREE_FAILURES - 1):
            assert sign_in(daemon, "wrong-token").status_code == 401
    with running("sqlite", tmp_path) as restarted:
        assert me(restarted, cookie) == 200
        assert me(restarted, ended) == 401  # signed out before the restart: still out
        assert sign_in_failures(restarted) == [FREE_FAILURES - 1]  # the count was kept


def test_failures_on_two_consoles_of_one_store_are_counted_together(tmp_path: Path) -> None:
    """Two consoles (as two daemons have) on one SQLite store, on one frozen clock: the fifth
    failure, whichever console saw the others, makes the address wait on both."""
    write(tmp_path / "rulekit.yaml", CONFIG)
    (tmp_path / "rules.d").mkdir()
    snapshot = load_snapshot(tmp_path / "rulekit.yaml", tmp_path / "rules.d")
    store = open_store("sqlite:///x.sqlite3", tmp_path)

    def clock() -> float:
        return 1_700_000_000.0

    try:
        one = Console(LiveFeed(), lambda: snapshot, store, clock=clock)
        two = Console(LiveFeed(), lambda: snapshot, store, clock=clock)
        with serve(console_app(one)) as (first, _), serve(console_app(two)) as (second, _):
            for url in (first, second, first, second, first)[:FREE_FAILURES]:
                response = httpx.post(f"{url}/console/login", data={"token": "wrong"})
                assert response.status_code == 401
            for url in (first, second):
                response = httpx.post(f"{url}/console/login", data={"token": CONSOLE_TOKENS["ann"]})
                assert response.status_code == 429
    finally:
        store.close()


def test_a_reload_that_revokes_a_token_ends_its_sessions_in_the_store(tmp_path: Path) -> None:
    with running("sqlite", tmp_path) as daemon:
        cookie = sign_in(daemon, TOKENS["anna"]).cookies[COOKIE]
        kept = sign_in(daemon, TOKENS["boris"]).cookies[COOKIE]
        config = tmp_path / "rulekit.yaml"
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace(sha(TOKENS["anna"]), sha("anna-new-token-0123")))
        assert daemon.reload()
        assert me(daemon, cookie) == 401
        assert len(session_rows(daemon)) == 1  # anna's is gone from the store: everywhere
        assert me(daemon, kept) == 200
        config.write_text(text)  # the old token again: its sessions do not come back
        assert daemon.reload()
        assert me(daemon, cookie) == 401


def test_a_console_turned_off_ends_every_session_in_the_store(tmp_path: Path) -> None:
    with running("sqlite", tmp_path) as daemon:
        sign_in(daemon, TOKENS["anna"])
        daemon.daemon.snapshot.config.raw.console.enabled = False
        assert me(daemon, "anything") == 404
        assert session_rows(daemon) == []


def test_expired_sessions_and_old_failures_are_purged_in_batches(tmp_path: Path) -> None:
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    try:
        with store.transaction() as state:
            for n in range(7):
                state.open_console_session(
                    f"h{n}", "c", idle=10, per_credential=64, most=100, now=1000.0
                )
            state.open_console_session("live", "c", idle=1e12, per_credential=64, most=100)
            state.save_sign_in_state("old", throttle.SignInFailures(3, 1000.0, 1000.0))
        pauses: list[float] = []
        purge(store, RetentionSettings(), batch=3, pause=pauses.append)
        with store.reading() as state:
            left = [row["session_hash"] for row in state.execute("SELECT * FROM console_sessions")]
            failures = state.execute("SELECT * FROM console_sign_ins").fetchall()
        assert (left, failures) == (["live"], [])
        assert len(pauses) >= 2  # 8 rows, 3 at a time
    finally:
        store.close()


def test_a_session_used_on_another_daemon_is_read_from_the_store_again(tmp_path: Path) -> None:
    """What a daemon read of a session is kept for REVALIDATE seconds at most (no store round
    trip per request), then read again."""
    store = open_store("sqlite:///x.sqlite3", tmp_path)
    try:
        write(tmp_path / "rulekit.yaml", CONFIG)
        (tmp_path / "rules.d").mkdir()
        config = load_snapshot(tmp_path / "rulekit.yaml", tmp_path / "rules.d").config

        async def run() -> None:
            here = Sessions(store, revalidate=3600)
            there = Sessions(store, revalidate=0)
            session = await here.open(token_hash(CONSOLE_TOKENS["ann"]))
            assert await there.viewer(session, config) is not None
            await here.close(session)
            assert await there.viewer(session, config) is None  # read again: over
            assert await here.viewer(session, config) is None

        asyncio.run(run())
    finally:
        store.close()
