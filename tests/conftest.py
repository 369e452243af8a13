"""Fixtures of the core tests (building blocks are in ``scaffold.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from postgres_schemas import drop_run_schemas, schema_url
from scaffold import write

from rulekit.engine.engine import Engine


@pytest.fixture(autouse=True)
def _clean_rulekit_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without the developer's own rulekit settings."""
    for name in ("RULEKIT_CONFIG", "RULEKIT_DISABLE_PLUGINS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session", autouse=True)
def _drop_postgres_schemas_of_the_run() -> Iterator[None]:
    """At the end of the session, drop every PostgreSQL schema this run created (see
    ``postgres_schemas.py``): what a failed or killed test left behind goes too."""
    yield
    drop_run_schemas()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A storage URL on a schema of this test's own in the test PostgreSQL server, dropped
    afterwards (the test skips when ``RULEKIT_TEST_POSTGRES`` is unset or unreachable)."""
    from rulekit.store.postgres import drop_schema

    url = schema_url()
    yield url
    drop_schema(url)


BuildEngine = Callable[..., Engine]


@pytest.fixture
def build_engine(tmp_path: Path) -> BuildEngine:
    """``build_engine(rules_yaml, config_yaml=None, **from_path_options)``: write the files
    into ``tmp_path`` and load them with :meth:`Engine.from_path`."""
    counter = iter(range(1_000_000))

    def build(rules: str, config: str | None = None, **options: Any) -> Engine:
        n = next(counter)
        rules_dir = write(tmp_path / f"rules{n}" / "rules.yaml", rules).parent
        config_path = None if config is None else write(tmp_path / f"rulekit{n}.yaml", config)
        return Engine.from_path(rules_dir, config_path, **options)

    return build
