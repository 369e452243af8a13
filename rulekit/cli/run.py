"""``rulekit run``: the daemon's command (imported lazily by :mod:`rulekit.cli.main`; only click at
the top, so ``rulekit --help`` stays fast)."""

from __future__ import annotations

import math
import signal
import sys

import click

MAX_JOB_LEASE = 7 * 24 * 3600.0
"""The longest ``--job-lease`` (a week): a lease runs on the store's clock, and one beyond what a
time can hold (``1e308``, ``inf``) or no number at all (``nan``) left every job unclaimable."""


def _finite(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if math.isnan(value):  # (NaN is neither below nor above a range's bounds)
        raise click.BadParameter("not a number")
    return value


@click.command("run")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar="RULEKIT_CONFIG",
    help="The config file (default: $RULEKIT_CONFIG, else no config).",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(),
    help="Rules directory or file (default: the config's `rules`, else ./rules.d).",
)
@click.option("--host", help="Address to listen on (default: the config's server.host).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    help="Port to listen on (default: the config's server.port).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to start when a rule's action has no configured service (empty token, ...).",
)
@click.option(
    "--job-lease",
    type=click.FloatRange(min=1.0, max=MAX_JOB_LEASE),
    callback=_finite,
    default=60.0,
    show_default=True,
    help="Seconds a claimed action job is held; after a crash it is retried once this passed.",
)
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="Reload when the rules or the config file change (SIGHUP always reloads).",
)
def run_command(
    config_path: str | None,
    rules_path: str | None,
    host: str | None,
    port: int | None,
    strict: bool,
    job_lease: float,
    watch: bool,
) -> None:
    """Run the daemon: receive webhooks, evaluate the rules, perform the actions durably.

    Reloads rules and config when their files change or on SIGHUP; stops cleanly on SIGTERM.
    """
    held = _hold_sighups()  # before the daemon's imports and its load, which take seconds
    from rulekit.cli.main import reports_errors
    from rulekit.server.daemon import serve

    sys.exit(
        reports_errors(serve)(
            config_path, rules_path, host, port, strict, job_lease, watch, sighups_held=held
        )
    )


def _hold_sighups() -> list[int]:
    """Hold SIGHUPs until the daemon listens for them: the list they are added to. Importing
    the daemon and loading the rules take seconds (15 with 10,000 rules), and until then a
    SIGHUP took its default action and ended the process (``systemctl reload`` right after a
    start, logrotate's hook). The daemon reloads once it listens if one came."""
    held: list[int] = []
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, lambda signum, frame: held.append(signum))
    return held
