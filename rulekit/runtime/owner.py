"""Who claims work in the store: one name per daemon process."""

from __future__ import annotations

import os
import socket


def owner_name() -> str:
    """Who claims work: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"
