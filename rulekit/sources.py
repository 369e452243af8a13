"""The files a load reads: from the disk, or again exactly as an earlier load read them.

The daemon loads its rules and config, then its evaluation workers load them too, in other
processes. Files may change in between (an admin saving, a deploy), so the daemon's load is
*recorded* — every file's bytes and every directory listing — and the workers load by
*replaying* that record: they run exactly the rules the daemon validated, whatever the disk
holds by then. Only the loader's reads go through here (the config file, the rules files and
the listing of the rules directory).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

from rulekit.yamlsource import read_file

Files = dict[str, bytes | list[str]]
"""A record: a file's absolute path -> its bytes; ``"dir:" + path`` -> the listing used."""

_recording: ContextVar[Files | None] = ContextVar("rulekit_sources_recording", default=None)
_replaying: ContextVar[Files | None] = ContextVar("rulekit_sources_replaying", default=None)


@contextlib.contextmanager
def recording() -> Iterator[Files]:
    """Record what the loads in this block read."""
    files: Files = {}
    token = _recording.set(files)
    try:
        yield files
    finally:
        _recording.reset(token)


@contextlib.contextmanager
def replaying(files: Files) -> Iterator[None]:
    """Serve the loads in this block from ``files`` instead of the disk."""
    token = _replaying.set(files)
    try:
        yield
    finally:
        _replaying.reset(token)


def _key(path: Path) -> str:
    return os.path.abspath(path)


def read_bytes(path: Path, limit: int) -> bytes:
    """A file's bytes, at most ``limit`` of them (raises ``OSError`` as reading from the disk
    does, :class:`rulekit.yamlsource.FileTooLarge` for a bigger file, found before reading)."""
    replay = _replaying.get()
    if replay is not None:
        data = replay.get(_key(path))
        if not isinstance(data, bytes):
            raise FileNotFoundError(2, "not among the files the daemon loaded", str(path))
        return data
    data = read_file(path, limit)
    record = _recording.get()
    if record is not None:
        record[_key(path)] = data
    return data


def listing(path: Path, list_files: Callable[[Path], list[Path]]) -> list[Path]:
    """``list_files(path)``, or the list an earlier load got."""
    key = "dir:" + _key(path)
    replay = _replaying.get()
    if replay is not None:
        names = replay.get(key)
        if not isinstance(names, list):
            raise FileNotFoundError(2, "not among the files the daemon loaded", str(path))
        return [Path(name) for name in names]
    files = list_files(path)
    record = _recording.get()
    if record is not None:
        record[key] = [str(file) for file in files]
    return files
