"""From a delivery to plans: provider → events → engine, against one state.

``rulekit test`` and rule test suites use it with the in-memory store; the daemon uses the same
steps with a durable store, inside its own transactions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rulekit.actions.base import ActionContext
from rulekit.channels.base import ChannelContext, Provider
from rulekit.config import Config
from rulekit.engine.engine import Engine, Plan
from rulekit.errors import ChannelError
from rulekit.event import Event
from rulekit.store.base import State, Store


def build_providers(engine: Engine) -> dict[str, Provider]:
    """A provider instance per configured channel."""
    providers: dict[str, Provider] = {}
    for name, channel in engine.config.channels.items():
        provider_class = engine.plugins.providers[channel.provider]
        providers[name] = provider_class(
            ChannelContext(name, channel.settings, engine.config.directory)  # type: ignore[arg-type]
        )
    return providers


@dataclass
class Outcome:
    """The events one input produced and the plan of each."""

    events: list[tuple[Event, Plan]] = field(default_factory=list)


class Pipeline:
    """Normalizes inputs and plans each event, keeping conversation state between inputs."""

    def __init__(self, engine: Engine, store: Store) -> None:
        self.engine = engine
        self.store = store
        self.providers = build_providers(engine)

    @property
    def config(self) -> Config:
        return self.engine.config

    def provider(self, channel: str) -> Provider:
        provider = self.providers.get(channel)
        if provider is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise ChannelError(f"channel {channel!r} is not configured (configured: {known})")
        return provider

    def raw(self, channel: str, body: bytes, *, now: datetime | None = None) -> Outcome:
        """Process one raw provider payload for ``channel``."""
        provider = self.provider(channel)
        with self.store.transaction() as state:
            events = provider.parse(body, state)
            return self._plan(events, state, now)

    def events(self, events: list[Event], *, now: datetime | None = None) -> Outcome:
        """Process already-normalized events."""
        with self.store.transaction() as state:
            return self._plan(events, state, now)

    def _plan(self, events: list[Event], state: State, now: datetime | None) -> Outcome:
        outcome = Outcome()
        for event in events:
            plan = self.engine.evaluate(event, state, now=now, explain=True, excluded=True)
            plan.apply(state)
            outcome.events.append((event, plan))
        return outcome

    def context(self, event: Event) -> ActionContext:
        """The context actions describe themselves in, for a dry run."""
        return ActionContext(
            event=event, config=self.config, provider=self.providers.get(event.channel)
        )

    def describe(self, event: Event, planned: Any) -> tuple[str, str | None]:
        """What a planned action would do, and why it would fail (None when it would not)."""
        action = self.engine.actions[planned.action]
        context = self.context(event)
        return action.describe(planned.model, context), action.unavailable(context)
