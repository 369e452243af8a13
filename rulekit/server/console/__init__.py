"""The agents' console: a small web page served by the daemon (sign-in with personal tokens,
a live feed over server-sent events, conversations with their client panel, sounds)."""

from __future__ import annotations

from rulekit.server.console.routes import Console, console_routes

__all__ = ["Console", "console_routes"]
