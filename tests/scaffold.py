"""Building blocks of the core tests: rule and config files written for real, sample events."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from rulekit.event import Event

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
CHATRA_SAMPLES = REPO / "plugins" / "chatra" / "tests" / "data"


def write(path: Path, text: str) -> Path:
    """Write dedented ``text`` to ``path`` (creating folders); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def make_event(**fields: Any) -> Event:
    """A normalized event; ``online-chat``/``created`` unless told otherwise."""
    fields.setdefault("channel", "online-chat")
    fields.setdefault("event", "created")
    return Event.model_validate(fields)
