"""Shared by the action tests: a config with a mixed agent directory, contexts, a runner."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from rulekit.actions.base import Action, ActionContext
from rulekit.channels.base import ChannelSettings
from rulekit.config import ChannelConfig, Config, RawConfig
from rulekit.directory import AgentEntry, Directory
from rulekit.event import Event
from rulekit.testing.clock import run_virtual

T = TypeVar("T")

SMTP_NAME = "smtp.rulekit.test"
"""A mail server's name that no DNS server knows (the tests' certificate is made for it)."""


def run(
    action: Action, scenario: Callable[[], Awaitable[T]], *, io_grace: float | None = None
) -> T:
    """Run ``scenario`` in a fresh event loop, closing the action's clients afterwards; on
    virtual time (:func:`~rulekit.testing.clock.run_virtual`) when ``io_grace`` is given."""

    async def main() -> T:
        try:
            return await scenario()
        finally:
            await action.aclose()
            await _connections_closed()

    if io_grace is not None:
        return run_virtual(main(), io_grace=io_grace)
    return asyncio.run(main())


def received(condition: Callable[[], T], timeout: float = 15.0) -> T:
    """Poll ``condition`` (what a fake service recorded) until it is true, and return it.

    A fake records a request in a thread of its own, which a busy machine may run only after
    the client gave up waiting for the answer."""
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


async def _connections_closed(patience: float = 10.0) -> None:
    """Wait until the loop's sockets are closed (a TLS close finishes a round trip later).

    ``asyncio.run`` closes the loop right after the scenario; a TLS connection still saying
    goodbye then leaks its socket into a later test's unraisable-exception check.
    """
    loop = asyncio.get_running_loop()
    transports = getattr(loop, "_transports", {})
    deadline = loop.time() + patience
    while any(getattr(t, "_sock", None) is not None for t in list(transports.values())):
        if loop.time() > deadline:
            return
        await asyncio.sleep(0.01)


AGENTS = [
    # mixed channel access and mixed case, on purpose
    AgentEntry(email="Ann@Example.com", groups=["support"], channels=["online-chat"]),
    AgentEntry(email="bob@example.com", groups=["support"], channels=[]),
    AgentEntry(
        email="Cara@example.COM", groups=["support", "sales"], channels=["online-chat", "web"]
    ),
    AgentEntry(email="dan@example.com", groups=["sales"], channels=["online-chat"]),
    AgentEntry(email="eve@example.com", groups=["support"], channels=["online-chat"]),
]


def make_config(default_group: str | None = None, **integrations: Any) -> Config:
    config = Config(raw=RawConfig())
    config.directory = Directory(list(AGENTS), ["support", "sales"])
    for name in ("online-chat", "web", "phone"):
        settings = ChannelSettings(default_group=default_group if name == "online-chat" else None)
        config.channels[name] = ChannelConfig(name, "webhook", settings)
    config.integrations.update(integrations)
    return config


def make_event(
    channel: str = "online-chat", conversation: dict[str, Any] | None = None, **fields: Any
) -> Event:
    conversation = {"id": "conv-1", "status": "open", **(conversation or {})}
    return Event(
        channel=channel,
        event=fields.pop("event", "created"),
        conversation=conversation,
        client=fields.pop("client", {"id": "client-1", "name": "Mia"}),
        message=fields.pop("message", {"id": "m1", "text": "hello", "author": "client"}),
        **fields,
    )


def make_context(event: Event | None = None, config: Config | None = None, **kw: Any):
    return ActionContext(event=event or make_event(), config=config or make_config(), **kw)
