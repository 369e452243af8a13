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
