"""pytest fixtures for rulekit and its plugins (loaded through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from rulekit.testing.fake_slack import FakeSlack
from rulekit.testing.fake_telegram import FakeTelegram
from rulekit.testing.fakehttp import FakeService

if TYPE_CHECKING:
    from rulekit.plugins import Plugins
    from rulekit.store.memory import MemoryStore


@pytest.fixture
def fake_service() -> Iterator[FakeService]:
    """A generic recording HTTP server on loopback (answers 200 ``{}`` unless scripted)."""
    with FakeService() as service:
        yield service


@pytest.fixture
def plugins() -> Plugins:
    """A freshly loaded set of plugins (built-ins and installed entry points)."""
    from rulekit.plugins import load_plugins

    return load_plugins()


@pytest.fixture
def memory_store() -> MemoryStore:
    """An empty in-memory store."""
    from rulekit.store.memory import MemoryStore

    return MemoryStore()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A fake Slack Web API on loopback (token ``fake_slack.token``; every channel exists)."""
    with FakeSlack() as service:
        yield service


@pytest.fixture
def fake_telegram() -> Iterator[FakeTelegram]:
    """A fake Telegram Bot API on loopback (token ``fake_telegram.token``; every chat exists)."""
    with FakeTelegram() as service:
        yield service
