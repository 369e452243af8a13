"""The set-aside listing (console and ``rulekit requeue``) reads the heads of the bodies it
previews, on every store: 100 bodies of 4 MiB each were read whole (400 MiB) to show 200
characters of each. What it shows is the same as from the whole bodies, however the 200th
character falls (four-byte characters, bytes that are not UTF-8, a sequence cut short)."""

from __future__ import annotations

import tracemalloc

from rulekit.audit import repair

MIB = 2**20
BODIES = [
    "😀".encode() * (MIB // 4),  # 200 characters of four bytes: exactly 800 bytes
    b"\xff" * MIB,  # not UTF-8: one character per byte
    b"\xe2\x82" * (MIB // 2),  # sequences cut short: one character per two bytes
    ("a" * 199 + "€" * MIB).encode()[:MIB],  # the 200th character is three bytes
    ("€" * 199 + "😀" * MIB).encode()[:MIB],  # ... four bytes, after three-byte ones
    b"a" * 198 + b"\xf0\x9f\x98" + b"x" * MIB,  # a four-byte character cut short there
    b'{"text": "short"}',
]
COPIES = 3


def test_the_set_aside_listing_reads_only_what_it_shows(store) -> None:
    with store.transaction() as state:
        for copy in range(COPIES):
            for n, body in enumerate(BODIES):
                inbox_id, _ = state.append_inbox("online-chat", body + b" " * copy)
                state.finish_inbox(inbox_id, error=f"ChannelError: body {n}")
    with store.transaction() as state:
        whole = state.inbox_items(status="failed")
        expected = [repair.item_view(item) for item in whole]
        del whole
    assert len(expected) == COPIES * len(BODIES)
    with store.transaction() as state:
        tracemalloc.start()
        try:
            listed = repair.set_aside(state, None)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert listed == expected
    # 18 bodies of a MiB were read whole before: 18 MiB; their heads take a few KiB
    assert peak < 2 * MIB, peak
