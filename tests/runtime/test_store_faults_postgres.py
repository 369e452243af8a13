"""A ``rulekit run`` daemon on PostgreSQL whose database misbehaves: a table it writes locked by
another session for long, its connections ended by the server.

Runs when ``RULEKIT_TEST_POSTGRES`` names a reachable server (CI sets it); skipped otherwise.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import psycopg
import pytest
from daemons import Process, chat_started, wait_for, write_setup

JSON = {"Content-Type": "application/json"}


def on_postgres(tmp_path, processes, chatra, url: str) -> Process:
    """A daemon of the usual test setup, its store the schema at ``url``."""
    config = write_setup(tmp_path, chatra=chatra)
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {url}")
    )
    return processes(config).wait_ready()


@contextmanager
def session(url: str) -> Iterator[psycopg.Connection]:
    """Another session on the daemon's schema (autocommit unless it begins a transaction)."""
    from rulekit.store.postgres import split_url

    conninfo, options = split_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"SET search_path = {options['schema']}")
        yield conn


def post(daemon: Process, n: int, timeout: float = 60) -> httpx.Response:
    return httpx.post(daemon.webhook_url, content=chat_started(n), headers=JSON, timeout=timeout)


def replied(chatra) -> Counter:
    return Counter(body["clientId"] for body in chatra.sent)


@pytest.mark.slow
def test_a_table_locked_by_another_session_answers_503_then_recovers(
    tmp_path, processes, chatra, postgres_url
):
    # a webhook's insert waited for the lock as long as it was held: no answer at all reached
    # the sender (not the 503 that makes it retry), and the daemon's writers waited behind it
    daemon = on_postgres(tmp_path, processes, chatra, postgres_url)
    assert post(daemon, 0).status_code == 200
    wait_for(lambda: replied(chatra)["client00000000"] == 1, 30)
    with session(postgres_url) as other:
        with other.transaction():
            other.execute("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
            answer = post(daemon, 1)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"]
            health = httpx.get(f"{daemon.url}/healthz", timeout=10)
            assert health.status_code == 503
            assert health.json()["store"] != "ok"
        # the lock is gone: the sender's retry is taken, and processed once
        wait_for(lambda: post(daemon, 1).status_code == 200, 60, 0.2)
    wait_for(lambda: replied(chatra)["client00000001"] == 1, 60)
    wait_for(lambda: httpx.get(f"{daemon.url}/healthz", timeout=10).status_code == 200, 60)
    assert replied(chatra) == {"client00000000": 1, "client00000001": 1}


APP = f"rulekit-under-test-{os.getpid()}"
"""The ``application_name`` of the daemon's connections (to find them in pg_stat_activity): this
test run's own, so that runs sharing the database end none of each other's connections."""


def end_connections(url: str) -> list[str]:
    """End every connection of the daemon as the server would on a restart or a failover
    (``pg_terminate_backend``); what each was running last."""
    with session(url) as other:
        rows = other.execute(
            "SELECT pg_terminate_backend(pid), query FROM pg_stat_activity"
            " WHERE application_name = %s",
            (APP,),
        ).fetchall()
    return [query for _, query in rows]


def listening(url: str) -> bool:
    """Whether the daemon listens for other daemons' work."""
    with session(url) as other:
        row = other.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND query LIKE 'LISTEN %%'",
            (APP,),
        ).fetchone()
    return bool(row and row[0])


def test_connections_the_server_ended_while_idle_cost_no_webhook(
    tmp_path, processes, chatra, postgres_url
):
    # each pooled connection the server had ended failed the next transaction given it: a
    # 503 to as many webhooks (and a lost processor round) as the pool had idle connections
    daemon = on_postgres(tmp_path, processes, chatra, f"{postgres_url}&application_name={APP}")
    for n in range(5):
        assert post(daemon, n).status_code == 200
    wait_for(lambda: len(replied(chatra)) == 5, 30)
    for first in (5, 10):
        wait_for(lambda: listening(postgres_url), 30)
        ended = end_connections(postgres_url)
        assert any(query.startswith("LISTEN") for query in ended)  # the listener's too
        assert len(ended) >= 2
        answers = [post(daemon, n).status_code for n in range(first, first + 5)]
        assert answers == [200] * 5
        wait_for(lambda n=first + 5: len(replied(chatra)) == n, 30)
    assert set(replied(chatra).values()) == {1}
    assert httpx.get(f"{daemon.url}/healthz", timeout=10).status_code == 200


def jobs(url: str) -> list[tuple[str, int]]:
    """Each job's status and attempts, in order."""
    from rulekit.store.postgres import PostgresStore

    store = PostgresStore(url)
    try:
        with store.transaction() as state:
            return [(job.status, job.attempts) for job in state.jobs(limit=1000)]
    finally:
        store.close()


@pytest.mark.slow
def test_connections_ended_between_a_call_and_its_outcome_send_nothing_twice(
    tmp_path, processes, chatra, postgres_url
):
    daemon = on_postgres(tmp_path, processes, chatra, f"{postgres_url}&application_name={APP}")
    chatra.hang(120)  # the reply is held until released
    assert post(daemon, 1).status_code == 200
    wait_for(lambda: chatra.requests, 30)  # the call is under way, its start recorded
    wait_for(lambda: listening(postgres_url), 30)
    assert end_connections(postgres_url)
    chatra.release()
    wait_for(lambda: jobs(postgres_url) == [("done", 1)], 60)
    assert post(daemon, 2).status_code == 200
    wait_for(lambda: replied(chatra)["client00000002"] == 1, 30)
    assert replied(chatra) == {"client00000001": 1, "client00000002": 1}


@pytest.mark.slow
def test_connections_ended_again_and_again_lose_no_acknowledged_webhook(
    tmp_path, processes, chatra, postgres_url
):
    # connections end at any point: inside an ingest, a processor round, a claim, a call's
    # outcome, the listener. Every webhook answered 200 is processed once and replied to once
    daemon = on_postgres(tmp_path, processes, chatra, f"{postgres_url}&application_name={APP}")
    stop = threading.Event()
    ended: list[str] = []

    def ending() -> None:
        # until half the replies went out and more than ten connections were ended (or a few
        # hundred rounds): the faults also meet processor rounds, claims and calls, not only
        # the ingest, however fast the machine gets through the webhooks
        for _ in range(300):
            if stop.wait(0.1) or (len(replied(chatra)) >= 20 and len(ended) > 10):
                return
            ended.extend(end_connections(postgres_url))

    killer = threading.Thread(target=ending, daemon=True)
    killer.start()
    acked: set[int] = set()
    try:
        with httpx.Client(timeout=60) as client:
            for n in range(40):
                while n not in acked:
                    answer = client.post(daemon.webhook_url, content=chat_started(n), headers=JSON)
                    if answer.status_code == 200:
                        acked.add(n)
                    else:
                        assert answer.status_code == 503, answer.text
        killer.join(120)
    finally:
        stop.set()
        killer.join(30)
    assert len(ended) > 10
    # a call whose store work met the faults again and again waits up to the store backoff's
    # most (30 s) before it is tried again
    wait_for(lambda: len(replied(chatra)) == 40, 120)
    assert set(replied(chatra).values()) == {1}
    wait_for(lambda: {status for status, _ in jobs(postgres_url)} == {"done"}, 60)
    assert httpx.get(f"{daemon.url}/healthz", timeout=10).status_code == 200


def test_a_store_error_quoting_a_client_reaches_neither_the_log_nor_the_answer(
    tmp_path, processes, chatra, postgres_url
):
    # PostgreSQL's errors quote values: a check violation's DETAIL repeats the whole row
    # ("Failing row contains (..., client00000001, ...)"), here the webhook's own
    daemon = on_postgres(tmp_path, processes, chatra, postgres_url)
    with session(postgres_url) as other:
        other.execute(
            "ALTER TABLE inbox ADD CONSTRAINT refuses_a_visitor"
            " CHECK (conversation_key NOT LIKE '%%00000001%%')"
        )
    answer = httpx.post(
        daemon.webhook_url, content=chat_started(1, text="call me: +15551234567"), headers=JSON
    )
    assert answer.status_code >= 500  # the sender retries; never a 200
    assert "00000001" not in answer.text and "5551234567" not in answer.text
    assert daemon.terminate() == 0
    log = daemon.output()
    assert "Exception in ASGI application" in log  # the failure is logged, what it quotes not
    assert "00000001" not in log and "5551234567" not in log and "Failing row" not in log


@pytest.mark.slow
def test_outcome_held_up_by_a_lock_past_the_lease_is_recorded_and_not_sent_again(
    tmp_path, processes, chatra, postgres_url
):
    # the call is made; its outcome, the claim's renewal and the claims all wait on a lock of
    # the outbox past the job's lease: once it is gone the outcome is recorded, and the job
    # whose lease ran out meanwhile is not taken and sent again
    config = write_setup(tmp_path, chatra=chatra)
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    daemon = processes(config, "--job-lease", "3").wait_ready()
    chatra.hang(120)  # the reply is held until released
    assert post(daemon, 1).status_code == 200
    wait_for(lambda: chatra.requests, 30)
    with session(postgres_url) as other, other.transaction():
        other.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
        chatra.release()  # the call ends: its outcome cannot be recorded yet
        wait_for(lambda: "claim not renewed" in daemon.output(), 60)
        renewals = daemon.output().index("claim not renewed")
        wait_for(lambda: "cannot claim jobs" in daemon.output()[renewals:], 60)
    wait_for(lambda: jobs(postgres_url) == [("done", 1)], 90)
    assert post(daemon, 2).status_code == 200
    wait_for(lambda: replied(chatra)["client00000002"] == 1, 60)
    assert replied(chatra) == {"client00000001": 1, "client00000002": 1}


@pytest.mark.slow
def test_a_daemon_frozen_inside_a_transaction_holds_up_the_others_only_for_a_while(
    tmp_path, processes, chatra, postgres_url
):
    # a daemon stopped (or its machine paused) while it claims jobs holds the claims' lock in
    # a transaction left open: every other daemon's claims waited for it for ever. Here the
    # frozen daemon is a store of this test, its idle timeout shortened
    from rulekit.errors import StoreUnavailable
    from rulekit.store.postgres import PostgresStore
    from rulekit.store.sql.postgres import _CLAIM_LOCK

    daemon = on_postgres(tmp_path, processes, chatra, postgres_url)
    frozen = PostgresStore(f"{postgres_url}&idle_timeout=2")
    try:
        with pytest.raises(StoreUnavailable), frozen.transaction() as state:
            state.execute("SELECT pg_advisory_xact_lock(:lock)", {"lock": _CLAIM_LOCK})
            assert post(daemon, 1).status_code == 200
            # the server ends the frozen transaction, and the daemon claims and sends
            wait_for(lambda: replied(chatra)["client00000001"] == 1, 60)
    finally:
        frozen.close()
    assert post(daemon, 2).status_code == 200
    wait_for(lambda: replied(chatra)["client00000002"] == 1, 60)


@pytest.mark.slow
def test_a_database_away_for_a_while_is_used_again_soon_after_it_is_back(
    tmp_path, processes, chatra, postgres_url
):
    # the pool tried to connect again 1, 3, 7, 15, 31, 63 ... s after the first failure: a
    # database away for 40 s was used again over 20 s after it came back (a minute: 52 s),
    # every webhook meanwhile answered 503
    from rulekit.store.postgres import PostgresStore

    role = f"rk_{postgres_url.rsplit('=', 1)[1]}"
    with session(postgres_url) as admin:
        PostgresStore(postgres_url).close()  # the schema, as its owner made it
        admin.execute(f"CREATE ROLE {role} LOGIN")
        admin.execute(f"GRANT USAGE ON SCHEMA {role[3:]} TO {role}")
        admin.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA {role[3:]} TO {role}")
        admin.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA {role[3:]} TO {role}")
    try:
        url = postgres_url.replace("postgres@", f"{role}@", 1) + f"&application_name={APP}"
        daemon = on_postgres(tmp_path, processes, chatra, url)
        assert post(daemon, 0).status_code == 200
        wait_for(lambda: replied(chatra)["client00000000"] == 1, 30)
        with session(postgres_url) as admin:
            admin.execute(f"ALTER ROLE {role} NOLOGIN")  # the database refuses the daemon
        end_connections(postgres_url)
        away = time.monotonic()
        wait_for(lambda: post(daemon, 1, timeout=60).status_code == 503, 30)
        wait_for(lambda: time.monotonic() - away > 40, 60, 1.0)  # away for 40 s
        with session(postgres_url) as admin:
            admin.execute(f"ALTER ROLE {role} LOGIN")
        back = time.monotonic()
        wait_for(lambda: post(daemon, 1, timeout=60).status_code == 200, 120, 0.5)
        assert time.monotonic() - back < 15  # (the next try of the old schedule: 63 s)
        wait_for(lambda: replied(chatra)["client00000001"] == 1, 60)
    finally:
        with session(postgres_url) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
