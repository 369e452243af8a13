"""rulekit-chatra: the Chatra live chat as a rulekit channel (``online-chat``).

Modules, one concept each:

* :mod:`~rulekit_chatra.settings` — the channel's settings model;
* :mod:`~rulekit_chatra.payload` — Chatra's webhook JSON, read tolerantly into plain records;
* :mod:`~rulekit_chatra.normalize` — normalized events from a payload and conversation state;
* :mod:`~rulekit_chatra.api` — the REST client replies go through;
* :mod:`~rulekit_chatra.provider` — the provider tying them together;
* :mod:`~rulekit_chatra.plugin` — the hook implementation rulekit loads;
* :mod:`~rulekit_chatra.testing` — a fake Chatra API for tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ChatraProvider", "ChatraSettings", "__version__"]

if TYPE_CHECKING:
    from rulekit_chatra.provider import ChatraProvider
    from rulekit_chatra.settings import ChatraSettings


def __getattr__(name: str) -> Any:
    # Lazy, so loading the plugin entry point (for `rulekit --help`) stays cheap.
    if name == "ChatraProvider":
        from rulekit_chatra.provider import ChatraProvider

        return ChatraProvider
    if name == "ChatraSettings":
        from rulekit_chatra.settings import ChatraSettings

        return ChatraSettings
    raise AttributeError(name)
