"""A snapshot: one fully loaded, validated set of config, rules, actions and providers.

The daemon holds one current snapshot and swaps it atomically on reload; every event is
evaluated against exactly one snapshot, never a half-loaded one.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rulekit import sources
from rulekit.channels.base import Provider
from rulekit.config import Config
from rulekit.engine.engine import Engine
from rulekit.loading import open_config, rules_location
from rulekit.runtime.pipeline import build_providers
from rulekit.runtime.problems import run_problems


class Users:
    """How many of the dispatcher's attempts use a snapshot now: its actions' and providers'
    network clients are not closed while any does (:meth:`Reloading._retire
    <rulekit.server.reloading.Reloading._retire>`)."""

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """The snapshot is used while the block runs."""
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


@dataclass(frozen=True)
class Snapshot:
    """Config, compiled rules (``engine``), action instances (``engine.actions``) and a
    provider per configured channel (``providers``)."""

    engine: Engine
    providers: dict[str, Provider]
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    files: sources.Files = field(default_factory=dict, repr=False)
    """The files this snapshot was loaded from, as read (the evaluation workers load these)."""
    users: Users = field(default_factory=Users, repr=False, compare=False)
    """The attempts using it now (its clients stay open for them)."""

    @property
    def version(self) -> str:
        """The rules' content hash (``rulekit_rules_version`` in metrics, ``/healthz``)."""
        return self.engine.version

    @property
    def config(self) -> Config:
        return self.engine.config

    @functools.cached_property
    def problems(self) -> list[str]:
        """What will fail at run time (:func:`problems_of`), found once: the daemon finds them
        while it loads the snapshot (they ask the providers' code), never on its event loop."""
        return run_problems(self.engine, self.providers)


def load_snapshot(
    config_path: str | Path | None,
    rules_path: str | Path | None = None,
    *,
    files: sources.Files | None = None,
    environ: dict[str, str] | None = None,
) -> Snapshot:
    """Load everything from files (or from ``files``, what an earlier load read). Raises
    :class:`rulekit.errors.ValidationErrors` (or another :class:`rulekit.errors.RulekitError`)
    without side effects when anything is invalid. ``environ``: what the config's ``${NAME}``
    read (else this process's environment)."""
    reads = sources.replaying(files) if files is not None else sources.recording()
    with reads as record:
        plugins, config = open_config(str(config_path) if config_path else None, environ)
        location = rules_location(str(rules_path) if rules_path else None, config)
        engine = Engine.from_path(location, config, plugins=plugins)
    used = files if files is not None else record if record is not None else {}
    snapshot = Snapshot(engine, build_providers(engine), files=used)
    release_free_memory()
    return snapshot


def problems_of(snapshot: Snapshot) -> list[str]:
    """What will fail at run time with this snapshot (see :mod:`rulekit.runtime.problems`):
    ``run --strict`` refuses to start on any, ``check --strict`` reports the same list."""
    return list(snapshot.problems)


def storage_errors(config: Config) -> list[str]:
    """The config's ``storage:`` as every command that opens the store reads it: a URL it
    cannot even parse (an unknown scheme, a SQLite URL with a host, an unknown option) stops
    ``rulekit run`` at once, so ``rulekit check`` says it is an error and a reload to it is
    refused. Whether the database can be reached is not checked: that is the machine's, at
    run time."""
    from rulekit.errors import StoreError
    from rulekit.rules.files import display_path
    from rulekit.store import parse_url

    try:
        parse_url(config.raw.storage, config.base_dir)
    except StoreError as exc:
        where = f"{display_path(config.path)}: " if config.path else ""
        return [f"{where}storage: {exc}"]
    return []


def freeze_heap() -> None:
    """Keep every object alive now (the loaded rules, config and clients) out of the garbage
    collector's work, so that the collections traffic causes scan only what was allocated
    since, however many rules are loaded (:func:`gc.freeze`). Called again once a reload's
    old snapshot is released: what an earlier call kept aside is examined first (and
    collected, when garbage by then). For long-running processes only: a process that
    loads many snapshots and calls this for none of them keeps nothing aside."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def release_free_memory() -> None:
    """Give the heap freed after loading back to the operating system.

    Loading a large rule set allocates far more, briefly, than the compiled rules keep (YAML
    trees, expression trees, generated source); glibc keeps that memory mapped unless asked.
    With 10,000 rules this takes the daemon's resident size from ~230 MB to ~140 MB. A no-op
    where the C library has no ``malloc_trim``.
    """
    import contextlib
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
