"""A retry that arrives while the first request with its ``Idempotency-Key`` is still in
progress is refused (409, ``Retry-After``) instead of making the change a second time; once
the first has finished, a retry gets its answer; a first request lost with its daemon holds the
key off for a bounded time only, then the retry runs it. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from postgres_schemas import schema_url
from workspace_helpers import CONVERSATION, STORAGES, Workspace, path, running

from rulekit.server.console import idempotency
from rulekit.store.requests import IN_FLIGHT
from rulekit.store.sqlite import SQLiteStore

pytest.importorskip("rulekit_chatra")

KEY = "k-tags"
AGENT = "anna@example.com"
TAGS = {"add": ["vip"]}


class _Watched:
    """A store's state that tells ``held`` when it newly claims ``key``."""

    def __init__(self, state: Any, key: str, claimed: list[str]) -> None:
        object.__setattr__(self, "_state", state)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_claimed", claimed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._state, name, value)

    def claim_request_key(self, who: str, key: str, *args: Any, **kwargs: Any) -> Any:
        kept = self._state.claim_request_key(who, key, *args, **kwargs)
        if key == self._key and kept is None:
            self._claimed.append(key)
        return kept


class HoldsTheFirstClaim:
    """A store that holds the request which first claims :data:`KEY`: once its claim is
    committed, until ``release`` is set (its thread waits; the store is free meanwhile)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held = threading.Event()
        self.release = threading.Event()

    @contextlib.contextmanager
    def _watched(self) -> Iterator[Any]:
        claimed: list[str] = []
        with super().transaction() as state:  # type: ignore[misc]
            yield _Watched(state, KEY, claimed) if not self.held.is_set() else state
        if claimed and not self.held.is_set():
            self.held.set()
            assert self.release.wait(30)

    def transaction(self) -> Any:
        return self._watched()


class HeldSQLite(HoldsTheFirstClaim, SQLiteStore):
    pass


@contextlib.contextmanager
def held_workspace(kind: str, folder: Path) -> Iterator[tuple[Workspace, HoldsTheFirstClaim]]:
    """A daemon whose store holds the first request that claims :data:`KEY`."""
    if kind == "sqlite":
        store: Any = HeldSQLite(folder / "rulekit.sqlite3")
        with running(kind, folder, store=store) as workspace:
            yield workspace, store
        store.close()
        return
    from rulekit.store.postgres import PostgresStore, drop_schema

    class HeldPostgres(HoldsTheFirstClaim, PostgresStore):
        pass

    url = schema_url()
    store = HeldPostgres(url)
    try:
        with running(kind, folder, storage=url, store=store) as workspace:
            yield workspace, store
    finally:
        store.close()
        drop_schema(url)


def tags(workspace: Workspace, key: str = KEY) -> httpx.Response:
    with workspace.client("anna") as anna:
        return anna.post(f"{path()}/tags", json=TAGS, headers={"Idempotency-Key": key})


def vip_added(workspace: Workspace) -> list[Any]:
    updated = workspace.events("updated")
    return [e for e in updated if e.data["changed"]["tags"].get("added") == ["vip"]]


@pytest.mark.parametrize("kind", STORAGES)
def test_a_retry_while_the_first_request_runs_is_409_then_gets_its_answer(
    kind: str, tmp_path: Path
) -> None:
    with held_workspace(kind, tmp_path) as (workspace, store):
        workspace.started()
        answers: list[httpx.Response] = []
        first = threading.Thread(target=lambda: answers.append(tags(workspace)))
        first.start()
        try:
            assert store.held.wait(30)  # claimed, still in progress
            busy = tags(workspace)
            assert busy.status_code == 409
            assert busy.headers["Retry-After"] == str(idempotency.RETRY_AFTER)
            assert "still in progress" in busy.json()["error"]
        finally:
            store.release.set()
            first.join(30)
        (done,) = answers
        assert done.status_code == 200, done.text
        with workspace.client("admin") as admin:  # a retry that ran again would tag again
            assert admin.post(f"{path()}/tags", json={"remove": ["vip"]}).status_code == 200
        again = tags(workspace)
        assert again.status_code == 200 and again.json() == done.json()
        with workspace.client("anna") as anna:
            assert anna.get(path()).json()["conversation"]["tags"] == []
        assert len(vip_added(workspace)) == 1


@pytest.mark.parametrize("kind", STORAGES)
def test_a_first_request_lost_with_its_daemon_holds_the_key_off_for_a_bounded_time(
    kind: str, tmp_path: Path
) -> None:
    with held_workspace(kind, tmp_path) as (workspace, store):
        workspace.started()
        store.held.set()  # nothing to hold here
        print_ = idempotency.fingerprint("POST", "tags", CONVERSATION, TAGS)
        now = datetime.now(UTC)
        # daemons that died with a request: one just now, one longer ago than the bound
        with store.transaction() as state:
            for key, claimed in ((KEY, now), ("k-lost", now - IN_FLIGHT * 2)):
                assert (
                    state.claim_request_key(AGENT, key, print_, CONVERSATION, now=claimed) is None
                )
        assert tags(workspace).status_code == 409
        assert vip_added(workspace) == []
        ran = tags(workspace, "k-lost")
        assert ran.status_code == 200, ran.text
        assert len(vip_added(workspace)) == 1
        again = tags(workspace, "k-lost")
        assert again.status_code == 200 and again.json() == ran.json()
        assert len(vip_added(workspace)) == 1


def test_a_claim_is_lost_on_the_clock_of_the_keys(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    clock = [datetime(2026, 5, 1, 12, 0, tzinfo=UTC)]
    keys = idempotency.IdempotencyKeys(store, now=lambda: clock[0])

    async def scenario() -> None:
        assert await keys.claim(AGENT, KEY, "print", CONVERSATION) == (True, None)
        clock[0] += IN_FLIGHT
        with pytest.raises(idempotency.InFlight):
            await keys.claim(AGENT, KEY, "print", CONVERSATION)
        clock[0] += timedelta(seconds=1)
        assert await keys.claim(AGENT, KEY, "print", CONVERSATION) == (True, None)
        await keys.finish(AGENT, KEY, 200, b"{}")
        clock[0] += IN_FLIGHT * 2
        assert await keys.claim(AGENT, KEY, "print", CONVERSATION) == (False, (200, b"{}"))

    try:
        asyncio.run(scenario())
    finally:
        store.close()
