"""The loaded rules are kept out of the garbage collector's work, and a reload's old rules are
not kept with them."""

from __future__ import annotations

import gc
import weakref

from rulekit.snapshot import freeze_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cycle collector frees it


def test_frozen_objects_are_not_scanned_and_a_second_freeze_collects_released_ones():
    try:
        kept = Node()
        gone = weakref.ref(kept)
        freeze_heap()
        assert gc.get_freeze_count() > 0
        del kept
        gc.collect()
        assert gone() is not None  # frozen: collections do not look at it
        freeze_heap()  # (after a reload, once the old rules are released)
        assert gone() is None
    finally:
        gc.unfreeze()
