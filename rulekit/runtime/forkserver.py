"""The fork server the daemon starts its helper processes from (evaluation workers, the
process validating the rules): a clean process, so that none inherits a lock or a thread of
the daemon, with the modules they run imported once.

The fork server is started with only the variables Python and the locale need
(:func:`rulekit.runtime.confined.base_environment`): a process keeps the environment it was
started with in its memory (``/proc/<pid>/environ``) whatever it sets afterwards, and every
process forked from the server would hold the daemon's secrets there. Each helper is given
the environment it needs when it starts."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import threading
from multiprocessing.context import ForkServerContext

from rulekit.runtime.confined import base_environment

_context_lock = threading.Lock()
_context: ForkServerContext | None = None


def fork_server() -> ForkServerContext:
    """The multiprocessing context of the fork server (started with the first process)."""
    global _context
    with _context_lock:
        if _context is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(
                ["rulekit.runtime.worker", "rulekit.snapshot", "rulekit.runtime.known"]
            )
            _context = context
        _start_without_secrets()
        return _context


def _start_without_secrets() -> None:
    """Start the fork server (and multiprocessing's resource tracker, which it starts too)
    with :func:`base_environment`, unless it runs already.

    Swapping this process's environment for a moment is the only way to choose a spawned
    server's; it happens once, when the daemon starts its first helper (and again only if the
    server died)."""
    server = getattr(multiprocessing.forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is not None and _running(pid):
        return
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(base_environment(saved))
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (not a zombie); without reaping it, which is the
    server's owner's to do."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rpartition(")")[2].split()[:1]
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: as multiprocessing finds it
    return state != ["Z"]
