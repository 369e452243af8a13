"""The sample webhook bodies in ``data/`` and providers to feed them to.

``data/`` holds fake but realistic Chatra webhook bodies; ``data/README.md`` says what each one
exercises. Providers are built the way rulekit builds them: a channel context with settings and
the agent directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rulekit.channels import ChannelContext
from rulekit.directory import AgentEntry, Directory

from rulekit_chatra import ChatraProvider, ChatraSettings

DATA = Path(__file__).parent / "data"
CHANNEL = "online-chat"


def sample(name: str) -> dict[str, Any]:
    """A sample webhook body, decoded (for a test to alter)."""
    return json.loads((DATA / name).read_bytes())


def sample_body(name: str) -> bytes:
    """A sample webhook body, as delivered."""
    return (DATA / name).read_bytes()


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def agent_directory() -> Directory:
    """Anna is in the directory, her email written in another case than Chatra's; Pavel is not."""
    anna = AgentEntry(
        email="Anna@Shop.Example.com", name="Anna W.", groups=["support"], channels=[CHANNEL]
    )
    return Directory([anna], ["support"])


def make_provider(directory: Directory | None = None, **settings: Any) -> ChatraProvider:
    """A provider of the ``online-chat`` channel; new conversations land in ``support``."""
    settings.setdefault("default_group", "support")
    context = ChannelContext(CHANNEL, ChatraSettings(**settings), directory or agent_directory())
    return ChatraProvider(context)
