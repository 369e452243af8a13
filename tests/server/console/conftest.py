"""Fixtures of the console tests (the server and its helpers are in ``console_helpers.py``)."""

from __future__ import annotations

from console_helpers import console_files, console_server

__all__ = ["console_files", "console_server"]
