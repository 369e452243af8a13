"""What an engine is built against: the plugins and the config, from what the caller gave."""

from __future__ import annotations

import os

from rulekit.config import Config, load_config
from rulekit.plugins import Plugins, load_plugins


def plugins_and_config(
    config: Config | str | os.PathLike[str] | None, plugins: Plugins | None
) -> tuple[Plugins, Config]:
    """The plugins (``plugins``, or the installed ones less those the config disables) and the
    config (``config`` loaded, a path to a config file, or None for the default config)."""
    given = plugins is not None
    if plugins is None:
        disabled = config.raw.plugins.disable if isinstance(config, Config) else ()
        plugins = load_plugins(disabled)
    if not isinstance(config, Config):
        config_path = config
        config = load_config(config_path, plugins)
        wanted = set(config.raw.plugins.disable)
        if not given and not wanted <= plugins.disabled:
            # the file itself says which plugins to leave out: load again without them
            plugins = load_plugins(plugins.disabled | wanted)
            config = load_config(config_path, plugins)
    return plugins, config
