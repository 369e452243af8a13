"""The plugin object rulekit loads (entry point ``chatra`` in the ``rulekit`` group)."""

from __future__ import annotations

from rulekit import hookimpl
from rulekit.registry import ProviderRegistry

from .provider import ChatraProvider


@hookimpl
def rulekit_register_providers(register: ProviderRegistry) -> None:
    """Register the ``chatra`` provider (default channel ``online-chat``)."""
    register.add(ChatraProvider)
