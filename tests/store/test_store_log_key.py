"""The store's key for the log's hashes of ids (:meth:`JournaledState.log_key`): made once at
random, the same for every connection (every daemon and command on the store), another on
another store; the log's hash of an id keyed with it is not the hash anyone can compute."""

from __future__ import annotations

from store_backends import Backend

from rulekit.runtime.logs import log_id

CHAT_EVENT = "telegram:5550123456:17"


def test_the_log_key_is_made_once_and_shared_by_every_connection(backend: Backend) -> None:
    first, second = backend.open(), backend.open()
    with first.transaction() as state:
        assert state.log_key() is None  # nothing made until a daemon asks
        made = state.log_key(make=True)
    with second.transaction() as state:
        assert state.log_key() == made
        assert state.log_key(make=True) == made  # not made again
    assert made is not None and len(made) == 8


def test_each_store_hashes_the_log_ids_with_a_key_of_its_own(backend: Backend, tmp_path) -> None:
    from rulekit.store.sqlite import SQLiteStore

    with backend.open().transaction() as state:
        key = state.log_key(make=True)
    other = SQLiteStore(tmp_path / "other.sqlite3")
    try:
        with other.transaction() as state:
            other_key = state.log_key(make=True)
    finally:
        other.close()
    assert key != other_key
    keyed = log_id(CHAT_EVENT, key=key)
    assert keyed.startswith("telegram~")
    assert keyed != log_id(CHAT_EVENT, key=other_key)
    # without the store's key, hashing every chat id there is finds nothing
    assert keyed != log_id(CHAT_EVENT, key=b"")
