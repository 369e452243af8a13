"""Fixtures of the Chatra plugin's tests (sample bodies and builders: ``chatra_samples.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from chatra_samples import encode, make_provider, sample_body
from rulekit.event import Event
from rulekit.store import MemoryStore

from rulekit_chatra import ChatraProvider
from rulekit_chatra.testing import FakeChatra

Feed = Callable[..., list[Event]]


@pytest.fixture
def provider() -> ChatraProvider:
    return make_provider()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def feed(provider: ChatraProvider, store: MemoryStore) -> Feed:
    """Parse bodies in order, one store transaction each, as the daemon does. A string names a
    sample in ``data/``, a dict is encoded as JSON. Returns all the events, in order."""

    def run(*bodies: str | bytes | dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        for body in bodies:
            if isinstance(body, str):
                body = sample_body(body)
            elif isinstance(body, dict):
                body = encode(body)
            with store.transaction() as state:
                events.extend(provider.parse(body, state))
        return events

    return run


@pytest.fixture
def fake_chatra() -> Iterator[FakeChatra]:
    """A fake Chatra REST API on loopback (see :mod:`rulekit_chatra.testing`)."""
    with FakeChatra() as service:
        yield service
