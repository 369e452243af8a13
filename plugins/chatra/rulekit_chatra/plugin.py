"""The plugin object rulekit loads (entry point ``chatra`` in the ``rulekit`` group)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rulekit import hookimpl

if TYPE_CHECKING:
    from rulekit.registry import ProviderRegistry


@hookimpl
def rulekit_register_providers(register: ProviderRegistry) -> None:
    """Register the ``chatra`` provider (default channel ``online-chat``)."""
    # Imported here, not at module level: `rulekit --help` loads this module to look for
    # commands, and should not pay for pydantic and httpx.
    from .provider import ChatraProvider

    register.add(ChatraProvider)
