"""The ``rulekit`` command line.

Only this module turns rulekit's errors into one-line messages and exit codes:
0 ok; 1 test failures, invalid rules or config, check errors; 2 usage errors and unreadable or
malformed inputs. Unexpected exceptions keep their traceback. Heavy modules are imported inside
commands so ``rulekit --help`` starts fast.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from rulekit.safetext import echo, echo_json

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

STORE_INT_MAX = 2**63 - 1
"""The largest integer a store's columns and ``LIMIT`` take (SQLite's INTEGER, PostgreSQL's
BIGINT): an id or a limit above it is a usage error, not the database driver's traceback."""
STORE_ID = click.IntRange(min=1, max=STORE_INT_MAX)
"""The type of an id of the store's (a job's, an inbox item's) given on the command line."""
STORE_LIMIT = click.IntRange(min=1, max=STORE_INT_MAX)
"""The type of a ``--limit`` of rows read from the store."""


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn rulekit errors into a message on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from rulekit.errors import ConfigError, PluginError, RulekitError, ValidationErrors

        try:
            return command(*args, **kwargs)
        except ValidationErrors as exc:
            for error in exc.errors:
                echo(f"error: {error}", err=True)
            echo(f"{exc.total} error(s)", err=True)
            sys.exit(EXIT_FAILED)
        except (ConfigError, PluginError) as exc:
            echo(f"error: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except RulekitError as exc:
            echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


LAZY_COMMANDS: dict[str, str] = {
    "run": "rulekit.cli.run:run_command",
    "why": "rulekit.cli.audit:why_command",
    "history": "rulekit.cli.audit:history_command",
    "stats": "rulekit.cli.audit:stats_command",
    "replay": "rulekit.cli.audit:replay_command",
    "forget": "rulekit.cli.audit:forget_command",
    "db": "rulekit.cli.audit:db_group",
    "retry": "rulekit.cli.repair:retry_command",
    "requeue": "rulekit.cli.repair:requeue_command",
}
"""Built-in commands living in their own modules, imported when used (or listed by --help).
Each module imports only click at its top, so listing them stays fast."""


class RulekitGroup(click.Group):
    """Adds lazily imported built-in commands, and plugin commands
    (``rulekit_register_commands``) the first time commands are listed or looked up."""

    _plugins_loaded = False

    def _lazy(self, name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(name)
        if target is None:
            return None
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        command = getattr(module, attribute, None)
        if command is not None:
            self.add_command(command, name)
        return command

    def _load_plugin_commands(self, ctx: click.Context) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from rulekit.plugins import load_command_plugins

        try:
            load_command_plugins(self)
        except Exception as exc:  # a broken plugin must not take the CLI down
            echo(f"warning: plugin commands not loaded: {exc}", err=True)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands(ctx)
        for name in LAZY_COMMANDS:
            if name not in self.commands:
                self._lazy(name)
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name) or self._lazy(name)
        if found is None:
            self._load_plugin_commands(ctx)
            found = super().get_command(ctx, name)
        return found


@click.group(cls=RulekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rulekit")
def cli() -> None:
    """rulekit: rules automation for customer-support events.

    Write rules in rules.d/*.yaml; try them with `rulekit test`; lint them with
    `rulekit check`.
    """


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="RULEKIT_CONFIG",
    help="The config file (default: $RULEKIT_CONFIG, else no config).",
)
rules_option = click.option(
    "--rules",
    "rules_path",
    type=click.Path(),
    help="Rules directory or file (default: the config's `rules`, else ./rules.d).",
)


def _parse_now(value: str | None) -> Any:
    if value is None:
        return None
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@cli.command("test")
@rules_option
@config_option
@click.option("--channel", help="Inputs are raw payloads of this channel (e.g. online-chat).")
@click.option(
    "--now",
    "now_text",
    help="Start the simulated clock: the first input is processed then, later ones as much "
    "later as their times say (ISO 8601; default: each event's time).",
)
@click.option(
    "--until",
    "until_text",
    help="After the last input, run the clock this much further (e.g. 1h), firing the timers "
    "due by then.",
)
@click.option(
    "--online",
    "online_text",
    metavar="EMAILS",
    help="The agents online in the console, comma-separated ('' for nobody); default: "
    "everyone. Conditions reading team and assign's only_online see them.",
)
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@reports_errors
def test_command(
    rules_path: str | None,
    config_path: str | None,
    channel: str | None,
    now_text: str | None,
    until_text: str | None,
    online_text: str | None,
    output_format: str,
    inputs: tuple[str, ...],
) -> None:
    """Dry run: which rules match each input event and exactly what they would do.

    INPUTS are normalized event files (JSON or YAML), raw provider payloads with --channel,
    or rule test suites (YAML with a top-level `tests:`), or folders of them. Inputs are
    processed in order against one in-memory state, on a simulated clock: timers of timed
    rules (`after:`) fire between the inputs they fall between.
    """
    from rulekit.cli.commands import run_test

    until = _parse_duration(until_text)
    sys.exit(
        run_test(
            rules_path,
            config_path,
            channel,
            _parse_now(now_text),
            output_format,
            inputs,
            until=until,
            online=_parse_online(online_text),
        )
    )


def _parse_online(value: str | None) -> frozenset[str] | None:
    if value is None:
        return None
    emails = [email.strip().lower() for email in value.split(",") if email.strip()]
    for email in emails:
        if "@" not in email:
            raise click.BadParameter(f"{email!r} is not an email address", param_hint="--online")
    return frozenset(emails)


def _parse_duration(value: str | None) -> Any:
    if value is None:
        return None
    from rulekit.models import bounded_duration

    try:
        return bounded_duration(value)  # added to the simulated clock
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--until") from None


@cli.command("check")
@click.argument("path", required=False, type=click.Path())
@config_option
@click.option(
    "--strict", is_flag=True, help="Treat warnings (e.g. unconfigured integrations) as errors."
)
@reports_errors
def check_command(path: str | None, config_path: str | None, strict: bool) -> None:
    """Validate rules and config; list every error and warning."""
    from rulekit.cli.commands import run_check

    sys.exit(run_check(path, config_path, strict))


@cli.command("plugins")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text")
@reports_errors
def plugins_command(output_format: str) -> None:
    """List installed plugins, their channels and actions, and the actions' parameters."""
    from rulekit.cli.commands import run_plugins

    run_plugins(output_format)


@cli.command("schema")
@reports_errors
def schema_command() -> None:
    """Print the JSON Schema of the rules format (with every installed action's parameters)
    and of test suites."""

    from rulekit.audit.suites import suite_schema
    from rulekit.plugins import load_plugins
    from rulekit.rules.schema import rules_schema

    echo_json(rules_schema(load_plugins(), suite_schema()))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="rulekit")


if __name__ == "__main__":  # pragma: no cover
    main()
