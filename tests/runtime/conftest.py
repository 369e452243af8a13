"""Fixtures of the daemon tests (helpers are in ``daemons.py``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from daemons import LogLines, Process, Server
from rulekit_chatra.testing import FakeChatra

from rulekit.server.daemon import Daemon


@pytest.fixture
def chatra() -> Iterator[FakeChatra]:
    with FakeChatra() as fake:
        yield fake


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start a daemon on a config (``serve(config_path, **Daemon kwargs)``); stopped after."""
    started: list[Server] = []

    def start(config: Path, **kwargs: Any) -> Server:
        kwargs.setdefault("watch", False)
        server = Server(Daemon(config, **kwargs)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(config: Path, *args: str) -> Process:
        process = Process(config, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.proc.poll() is None:
            process.kill()


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    """A stream for the daemon's log (as ``rulekit run`` configures it); the handlers that
    ``configure_logging`` replaces are put back after."""
    names = ["", "rulekit", "rulekit.sdk", "uvicorn", "uvicorn.error", "uvicorn.access"]
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield LogLines()
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled
