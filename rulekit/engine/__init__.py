"""The engine: a pure function from an event (and a state snapshot) to a plan, and its index.

``Engine``, ``Plan`` and ``PlannedAction`` are rulekit's public API (also as ``rulekit.Engine``).
"""

from __future__ import annotations

from rulekit.engine.engine import Engine, Plan, PlannedAction

__all__ = ["Engine", "Plan", "PlannedAction"]
