"""Fixtures of the audit tests (building blocks are in ``audit_site.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_site import Site, build_site


@pytest.fixture
def site(tmp_path: Path) -> Site:
    """Three recorded events: Jane's new chat (a bell, done), Jane's refund message (Slack:
    a 429, then done), Bob's angry refund message (Slack dead, the alarm pending)."""
    return build_site(tmp_path)
