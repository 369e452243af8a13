"""A provider's code the processor and the timer runner call on each item, within a budget.

A provider's :meth:`~rulekit.channels.base.Provider.parse` is plugin code that sees every body
from outside, and :meth:`~rulekit.channels.base.Provider.timer_due` and
:meth:`~rulekit.channels.base.Provider.channel_timers` are plugin code run for each timer and
each event: one that blocks or loops on one item would stall the processor (or the timers) for
every conversation. :class:`Parsers` runs them in threads of the plugin's own
(:meth:`HookRunner.call <rulekit.channels.hookrunner.HookRunner.call>`) with no store
transaction open (:func:`rulekit.runtime.planning.prepare_together`) and waits for each call at
most :data:`PARSE_BUDGET` seconds: a call over its budget raises :class:`ParseOverBudget` (the
processor sets the item aside, retryable like any other) and runs on in its thread, where the
state it was handed answers no more (:class:`~rulekit.store.detached.Fence`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rulekit.channels.base import ChannelTimer, Provider
from rulekit.channels.hookrunner import (
    HOOKS_IN_FLIGHT,
    HookRefused,
    HookRunner,
    HookUnanswered,
    overridden,
)
from rulekit.errors import ChannelError
from rulekit.event import Event
from rulekit.store.base import State
from rulekit.store.detached import Fence

T = TypeVar("T")

PARSE_BUDGET = 5.0
"""Seconds a provider's ``parse`` may take on one body (``timer_due`` on one timer,
``channel_timers`` on one body's events) before the item is set aside (``failed``, retryable)
and the processor goes on with the others."""


class ParseOverBudget(ChannelError):
    """A provider's ``parse`` (``timer_due``, ``channel_timers``) did not return within its
    budget, or the plugin has too many calls running over theirs."""


class Parsers:
    """Runs providers' per-item code for one processor (or timer runner), each plugin in
    threads of its own (not those of the request path: a stuck parse takes no thread a
    webhook needs)."""

    def __init__(self, budget: float | None = None) -> None:
        self.budget = PARSE_BUDGET if budget is None else budget
        self._runner = HookRunner(self.budget, HOOKS_IN_FLIGHT)

    def parse(self, provider: Provider, body: bytes, state: State) -> list[Event]:
        """``provider.parse(body, state)`` within the budget; :class:`ParseOverBudget` when it
        does not return in time (it is left running, ``state`` closed to it)."""
        return self._fenced(provider, "parse", provider.parse, body, state)

    def timer_due(self, provider: Provider, timer: ChannelTimer, state: State) -> list[Event]:
        """``provider.timer_due(timer, state)``, as :meth:`parse`."""
        return self._fenced(provider, "timer_due", provider.timer_due, timer, state)

    def schedule(
        self, provider: Provider, events: list[Event]
    ) -> Callable[[Event], list[ChannelTimer]]:
        """What the record of ``events`` asks ``provider.channel_timers`` (called while the
        record's transaction is open), asked now, within the budget, for all of them."""
        if not events or not overridden(provider, Provider, "channel_timers"):
            return provider.channel_timers  # none asked, or the project's own: in place

        def ask() -> dict[str, list[ChannelTimer]]:
            return {event.id: provider.channel_timers(event) for event in events}

        asked = self._bounded(provider, "channel_timers", ask)
        return lambda event: asked.get(event.id, [])

    def _fenced(
        self, provider: Provider, hook: str, function: Callable[..., T], item: Any, state: State
    ) -> T:
        fence = Fence(state)
        try:
            return self._bounded(provider, hook, function, item, fence.state)
        finally:
            fence.close()  # (a call given up finds it closed)

    def _bounded(self, provider: Provider, hook: str, function: Callable[..., T], *args: Any) -> T:
        try:
            return self._runner.call(provider.name, function, *args)
        except HookRefused:
            raise ParseOverBudget(
                f"the {provider.name} provider's {hook} was not started: {HOOKS_IN_FLIGHT} of"
                f" its calls run over their budget (PARSE_BUDGET: {self.budget:g} s)"
            ) from None
        except HookUnanswered:
            raise ParseOverBudget(
                f"the {provider.name} provider's {hook} did not return within its budget"
                f" (PARSE_BUDGET: {self.budget:g} s)"
            ) from None

    def close(self) -> None:
        """End the threads once their calls return."""
        self._runner.close()
