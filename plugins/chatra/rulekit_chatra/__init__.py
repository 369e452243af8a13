"""rulekit-chatra: the Chatra live chat as a rulekit channel (``online-chat``).

Modules, one concept each:

* :mod:`~rulekit_chatra.settings` — the channel's settings model;
* :mod:`~rulekit_chatra.payload` — Chatra's webhook JSON, read tolerantly into dataclasses;
* :mod:`~rulekit_chatra.normalize` — normalized events from a payload and conversation state;
* :mod:`~rulekit_chatra.api` — the REST client replies go through;
* :mod:`~rulekit_chatra.provider` — the provider tying them together;
* :mod:`~rulekit_chatra.plugin` — the hook implementation rulekit loads;
* :mod:`~rulekit_chatra.testing` — a fake Chatra API for tests.
"""

from rulekit_chatra.provider import ChatraProvider
from rulekit_chatra.settings import ChatraSettings

__version__ = "0.1.0"

__all__ = ["ChatraProvider", "ChatraSettings", "__version__"]
