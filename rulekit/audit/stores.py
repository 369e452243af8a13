"""Opening the store the config names, for the audit commands (which only read, or erase)."""

from __future__ import annotations

from rulekit.config import Config
from rulekit.errors import StoreError
from rulekit.store import JournaledStore, open_store, parse_url
from rulekit.store.urls import redact_url


def open_recorded(config: Config, *, writes: bool = True) -> JournaledStore:
    """The config's store, as the daemon left it. A SQLite file that does not exist is an
    error (it would be created empty), and so is a schema that is behind (``rulekit db
    upgrade`` first): these commands never migrate. ``writes=False`` for a command that only
    reads, through :meth:`~rulekit.store.base.JournaledStore.reading`: it never takes the write
    lock, so a daemon writing to the store at the same time never waits for it."""
    url = config.raw.storage
    parsed = parse_url(url, config.base_dir)
    if parsed.scheme == "memory":
        raise StoreError(
            f"storage is {redact_url(url)!r}: nothing is kept between processes, "
            "so there is nothing to read"
        )
    if parsed.scheme == "sqlite" and parsed.path is not None and not parsed.path.exists():
        where = f" (config {config.path})" if config.path else " (no config file: --config?)"
        raise StoreError(f"no store at {parsed.path}{where}; has `rulekit run` run yet?")
    return open_store(url, config.base_dir, upgrade=False, writes=writes)
