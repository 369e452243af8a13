"""Test helpers shipped with rulekit: fake HTTP services and pytest fixtures.

Installed as a pytest plugin (entry point ``pytest11``), so plugin authors get the same fixtures.
"""

from rulekit.testing.fakehttp import FakeService, RecordedRequest, Response

__all__ = ["FakeService", "RecordedRequest", "Response"]
