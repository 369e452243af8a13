"""Pausing Python's cyclic garbage collector while rules load.

Loading builds hundreds of thousands of objects that all stay alive (YAML trees, expression
trees, compiled rules). Each collection the allocations trigger walks all of them again to
find no garbage: with 10,000 rules that is over half of the load time. The collector is
paused for the load and resumed after it (nested and concurrent loads resume it once, when the
last one ends); the little cyclic garbage a load leaves is collected then.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_loads = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the cyclic garbage collector paused (reference counting still frees
    everything else as usual)."""
    global _loads, _was_enabled
    with _lock:
        if _loads == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _loads += 1
    try:
        yield
    finally:
        with _lock:
            _loads -= 1
            if _loads == 0 and _was_enabled:
                gc.enable()
