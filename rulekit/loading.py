"""Opening what the commands and the daemon work on: the plugins, the config, the rules."""

from __future__ import annotations

from pathlib import Path

from rulekit.config import Config, find_config_path, load_config
from rulekit.engine.engine import Engine
from rulekit.plugins import Plugins, load_plugins

__all__ = ["open_config", "open_engine", "rules_location"]


def open_config(
    config_path: str | None, environ: dict[str, str] | None = None
) -> tuple[Plugins, Config]:
    """Plugins (minus those the config disables) and the validated config (its ``${NAME}``
    read from ``environ``, else from this process's environment)."""
    path = find_config_path(config_path)
    plugins = load_plugins()
    config = load_config(path, plugins, environ)
    if config.raw.plugins.disable:
        plugins = load_plugins(config.raw.plugins.disable)
        config = load_config(path, plugins, environ)
    return plugins, config


def rules_location(rules_path: str | None, config: Config) -> Path:
    """Where the rules are: ``rules_path``, else the config's ``rules``, else ``rules.d``."""
    if rules_path:
        return Path(rules_path)
    if config.path is not None:
        return config.rules_path
    return Path("rules.d")


def open_engine(rules_path: str | None, config_path: str | None) -> Engine:
    """The engine of a config's rules (or of ``rules_path``)."""
    plugins, config = open_config(config_path)
    return Engine.from_path(rules_location(rules_path, config), config, plugins=plugins)
