"""The files a load reads: from the disk, or again exactly as an earlier load read them.

The daemon loads its rules and config, then its evaluation workers load them too, in other
processes. Files may change in between (an admin saving, a deploy), so the daemon's load is
*recorded* — every file's bytes and every directory listing — and the workers load by
*replaying* that record: they run exactly the rules the daemon validated, whatever the disk
holds by then. Only the loader's reads go through here (the config file, the rules files and
the listing of the rules directory).

Files are read within a size cap, checked before reading (:func:`read_file`, which other inputs
such as a dry run's events use too): a huge file costs nothing, and a FIFO or a device named as
a file is refused instead of blocking.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path

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


class FileTooLarge(OSError):
    """A file over the size cap (found before reading it whole)."""


def read_file(path: Path | str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    The size is checked before reading (``fstat``) and again while reading (at most
    ``limit + 1`` bytes are read, in case the file grows meanwhile), so a huge file costs
    nothing. Raises :class:`FileTooLarge` when it is over, :class:`OSError` when it cannot be
    read or is not a regular file (a FIFO or a device would block or never end).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(0, "not a regular file", str(path))
        if info.st_size > limit:
            raise FileTooLarge(0, f"the file is over {limit} bytes", str(path))
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(0, f"the file is over {limit} bytes", str(path))
    return data


def read_bytes(path: Path, limit: int) -> bytes:
    """A file's bytes, at most ``limit`` of them (raises ``OSError`` as reading from the disk
    does, :class:`FileTooLarge` for a bigger file, found before reading)."""
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
