"""The fork server the daemon starts its helper processes from (evaluation workers, the
process validating the rules): a clean process, so that none inherits a lock or a thread of
the daemon, with the modules they run imported once."""

from __future__ import annotations

import multiprocessing
import threading
from multiprocessing.context import ForkServerContext

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
        return _context
