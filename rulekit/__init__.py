"""rulekit: a plugin-based rules automation engine for customer-support events."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rulekit.hookspecs import hookimpl

__version__ = "0.1.0"

if TYPE_CHECKING:
    from rulekit.engine.engine import Engine, Plan, PlannedAction
    from rulekit.event import Event

__all__ = ["Engine", "Event", "Plan", "PlannedAction", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import rulekit` (and `rulekit --help`) stays fast.
    if name in {"Engine", "Plan", "PlannedAction"}:
        from rulekit import engine

        return getattr(engine, name)
    if name == "Event":
        from rulekit.event import Event

        return Event
    raise AttributeError(name)
