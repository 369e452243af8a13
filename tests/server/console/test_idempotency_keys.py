"""The console's ledger of Idempotency-Keys: one key, one request; bounded in number, age and
the size of what it keeps."""

from __future__ import annotations

import pytest

from rulekit.server.console import idempotency
from rulekit.server.console.idempotency import Conflict, IdempotencyKeys, fingerprint


def test_a_key_is_one_request_until_it_fails() -> None:
    keys = IdempotencyKeys(clock=lambda: 0.0)
    tags = fingerprint("POST", "tags", "c1", {"add": ["vip"]})
    assert keys.claim("anna", "k", tags) == (True, None)
    keys.settle("anna", "k", (200, b'{"ok":1}'))
    assert keys.claim("anna", "k", tags) == (False, (200, b'{"ok":1}'))
    with pytest.raises(Conflict):
        keys.claim("anna", "k", fingerprint("POST", "tags", "c1", {"add": ["new"]}))
    with pytest.raises(Conflict):  # the same body for another conversation is another request
        keys.claim("anna", "k", fingerprint("POST", "tags", "c2", {"add": ["vip"]}))
    assert keys.claim("boris", "k", tags) == (True, None)  # each agent's keys are their own
    keys.release("boris", "k")
    assert keys.claim("boris", "k", fingerprint("POST", "priority", "c1", {})) == (True, None)


def test_keys_are_bounded_in_number_age_and_kept_answers() -> None:
    now = [0.0]
    keys = IdempotencyKeys(clock=lambda: now[0])
    for number in range(idempotency.MAX_KEYS + 10):
        keys.claim("anna", f"k{number}", "print")
    assert keys.claim("anna", "k0", "other") == (True, None)  # the oldest were let go
    keys.settle("anna", "k0", (200, b"x" * (idempotency.MAX_ANSWER + 1)))
    assert keys.claim("anna", "k0", "other") == (False, None)  # too large to keep
    now[0] = idempotency.KEEP + 1
    assert keys.claim("anna", "k-new", "again") == (True, None)
    assert keys.claim("anna", "k0", "yet another") == (True, None)  # a day later: free
