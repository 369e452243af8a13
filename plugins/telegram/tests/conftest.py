"""Fixtures of the Telegram plugin's tests (builders: ``telegram_samples.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rulekit.event import Event
from rulekit.store import MemoryStore
from rulekit.testing.telegram_updates import Updates
from telegram_samples import encode, make_provider

from rulekit_telegram import TelegramProvider

Feed = Callable[..., list[Event]]


@pytest.fixture
def provider() -> TelegramProvider:
    return make_provider()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def updates() -> Updates:
    return Updates()


@pytest.fixture
def feed(provider: TelegramProvider, store: MemoryStore) -> Feed:
    """Parse updates in order, one store transaction each, as the daemon does. Returns all
    the events, in order."""

    def run(*bodies: bytes | dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        for body in bodies:
            with store.transaction() as state:
                events.extend(
                    provider.parse(body if isinstance(body, bytes) else encode(body), state)
                )
        return events

    return run
