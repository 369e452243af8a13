"""Test options shared by every test folder of the repository."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        default=False,
        help="also run the slow tests (marked `slow`): larger property runs, crash loops",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --full")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    """Property tests draw the same examples on every quick run; ``--full`` explores anew.

    A quick run is what CI gates on: it must say the same thing twice. The full profile keeps
    looking for new counterexamples (and prints the seed to reproduce one).
    """
    from hypothesis import settings

    settings.register_profile("quick", derandomize=True, database=None)
    settings.register_profile("explore", print_blob=True)
    settings.load_profile("explore" if config.getoption("--full") else "quick")
