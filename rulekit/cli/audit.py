"""The audit commands: ``why``, ``history``, ``stats``, ``replay``, ``forget`` and the ``db`` group.

The CLI imports this module lazily (``rulekit.cli.main.LAZY_COMMANDS``); it imports only click at
its top so that ``rulekit --help`` stays fast. The work is done in the modules next to it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from rulekit.cli.main import STORE_LIMIT, config_option, reports_errors
from rulekit.safetext import echo, echo_json, echo_json_list

EXIT_OK, EXIT_FAILED = 0, 1

format_option = click.option(
    "--format", "output_format", type=click.Choice(["text", "json"]), default="text"
)
show_content_option = click.option(
    "--show-content",
    is_flag=True,
    help="Show message texts, emails and other client data (hidden by default).",
)
since_option = click.option(
    "--since", help="Only events processed since then: a duration back (7d, 12h) or ISO time."
)


def _echo_json(document: Any) -> None:
    echo_json(document)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _since(value: str | None, zone: Any = None) -> Any:
    from rulekit.audit.history import parse_since

    try:
        return parse_since(value, _now(), zone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None


def _open(config_path: str | None, *, writes: bool = True) -> Any:
    """The loaded config and its store (the caller closes the store). ``writes=False``: the
    command only reads, in ``store.reading()``, which never holds the daemon's writes back."""
    from rulekit.audit.stores import open_recorded
    from rulekit.loading import open_config

    _, config = open_config(config_path)
    return config, open_recorded(config, writes=writes)


@click.command("why")
@click.argument("event_id")
@config_option
@format_option
@show_content_option
@click.option("--raw", is_flag=True, help="Also print the raw payload (with --show-content).")
@click.option(
    "--excluded",
    is_flag=True,
    help="Also say why each rule the index left out was not a candidate (from the current "
    "rules, when they are the version the event was evaluated with).",
)
@reports_errors
def why_command(
    event_id: str,
    config_path: str | None,
    output_format: str,
    show_content: bool,
    raw: bool,
    excluded: bool,
) -> None:
    """Explain one recorded event: each rule's conditions, the plan, every action attempt."""
    from rulekit.audit import explain

    config, store = _open(config_path, writes=False)
    try:
        with store.reading() as state:
            explanation = explain.explain(state, event_id, raw=raw)
    except explain.UnknownEvent as exc:
        echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        store.close()
    if excluded:
        from rulekit.engine.engine import Engine
        from rulekit.loading import open_config, rules_location

        plugins, loaded = open_config(config_path)
        engine = Engine.from_path(rules_location(None, loaded), loaded, plugins=plugins)
        explain.rebuild_excluded(explanation, engine)
    if output_format == "json":
        _echo_json(explain.as_document(explanation, show_content=show_content, raw=raw))
    else:
        echo(
            explain.as_text(
                explanation, timezone=config.timezone, show_content=show_content, raw=raw
            ),
            nl=False,
        )


@click.command("history")
@config_option
@click.option("--channel", help="Only events of this channel.")
@click.option("--event", "event_name", help="Only events of this kind (e.g. message).")
@click.option("--rule", help="Only events for which this rule enqueued an action.")
@click.option("--failed", is_flag=True, help="Only events with a dead-lettered action.")
@since_option
@click.option("--limit", type=STORE_LIMIT, default=50, show_default=True)
@format_option
@show_content_option
@reports_errors
def history_command(
    config_path: str | None,
    channel: str | None,
    event_name: str | None,
    rule: str | None,
    failed: bool,
    since: str | None,
    limit: int,
    output_format: str,
    show_content: bool,
) -> None:
    """List recently processed events, newest first, one line each."""
    from rulekit.audit import history

    config, store = _open(config_path, writes=False)
    try:
        since_time = _since(since, config.timezone)
        pages = history.history_pages(
            store,
            channel=channel,
            event=event_name,
            rule=rule,
            failed=failed,
            since=since_time,
            limit=limit,
        )
        # printed page by page: a long listing is never held in memory whole
        if output_format == "json":
            items = (
                history.as_item(line, show_content=show_content) for page in pages for line in page
            )
            echo_json_list("events", items)
            return
        listed = False
        for page in pages:
            listed = True
            text = history.as_text(page, timezone=config.timezone, show_content=show_content)
            echo(text, nl=False)
        if not listed:
            echo(history.as_text([], timezone=config.timezone), nl=False)
    finally:
        store.close()


@click.command("stats")
@config_option
@click.option(
    "--since", help="Count from then: a duration back (7d, 12h) or ISO time (default: all kept)."
)
@format_option
@reports_errors
def stats_command(config_path: str | None, since: str | None, output_format: str) -> None:
    """Per rule: events matched, actions done / failed / dead / pending, last fired."""
    from rulekit.audit import stats

    config, store = _open(config_path, writes=False)
    try:
        since_time = _since(since, config.timezone)
        loaded = _rule_names(config)
        with store.reading() as state:
            rows = stats.rule_stats(state, since=since_time, loaded=loaded)
    finally:
        store.close()
    if output_format == "json":
        _echo_json(stats.as_document(rows, since=since_time))
    else:
        echo(stats.as_text(rows, timezone=config.timezone), nl=False)


def _rule_names(config: Any) -> list[str] | None:
    """The names of the rules the config loads, in order; None when they do not load."""
    from rulekit.engine.engine import Engine
    from rulekit.errors import RulekitError

    try:
        return [rule.name for rule in Engine.from_path(config.rules_path, config).rules]
    except RulekitError:
        return None


@click.command("replay")
@click.option(
    "--rules",
    "rules_path",
    required=True,
    type=click.Path(exists=True),
    help="The candidate rules (directory or file), loaded with the config.",
)
@config_option
@since_option
@click.option("--limit", type=STORE_LIMIT, default=10_000, show_default=True)
@click.option("--all", "show_all", is_flag=True, help="Also list events that would not change.")
@format_option
@show_content_option
@reports_errors
def replay_command(
    rules_path: str,
    config_path: str | None,
    since: str | None,
    limit: int,
    show_all: bool,
    output_format: str,
    show_content: bool,
) -> None:
    """Backtest: run candidate rules over recorded events; show what would change.

    Nothing is written and nothing is sent. Cooldowns are not replayed: every event is
    evaluated as if no cooldown were running. Timed rules (after:) are simulated on the
    recorded times, as `rulekit test` does; their firings are compared with the recorded ones.
    """
    from rulekit.audit import replay
    from rulekit.audit.stores import open_recorded
    from rulekit.engine.engine import Engine
    from rulekit.loading import open_config

    plugins, config = open_config(config_path)
    since_time = _since(since, config.timezone)
    engine = Engine.from_path(rules_path, config, plugins=plugins)
    for warning in engine.ruleset.warnings:
        echo(f"warning: {warning}", err=True)
    store = open_recorded(config, writes=False)
    try:
        with store.reading() as state:
            report = replay.replay(
                state, engine, since=since_time, limit=limit, now=_now(), keep_unchanged=show_all
            )
    finally:
        store.close()
    if output_format == "json":
        _echo_json(replay.as_document(report, show_all=show_all, show_content=show_content))
    else:
        text = replay.as_text(report, show_all=show_all, show_content=show_content)
        echo(text, nl=False)


@click.command("forget")
@click.argument("client_id")
@click.option("--channel", help="Only on this channel (default: every channel).")
@config_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@format_option
@reports_errors
def forget_command(
    client_id: str, channel: str | None, config_path: str | None, yes: bool, output_format: str
) -> None:
    """Erase a client's personal data: client records, message texts, payloads, and any
    recorded text quoting them. Prints what was erased."""
    from rulekit.audit.privacy import FORGET_LABELS, forget

    where = f"on channel {channel!r}" if channel else "on every channel"
    if not yes:
        click.confirm(
            f"Erase the personal data of client {client_id!r} {where}? This cannot be undone",
            abort=True,
            err=True,
        )
    _, store = _open(config_path)
    try:
        counts = forget(store, client_id, channel)
        flushed = store.checkpoint()
    finally:
        store.close()
    if not flushed:
        echo(
            "note: the store's write-ahead log is in use and still holds older copies of the "
            "erased records; run `rulekit forget` again when the daemon is idle, or stop it",
            err=True,
        )
    if output_format == "json":
        _echo_json({"client_id": client_id, "channel": channel, "erased": counts})
        return
    if not any(counts.values()):
        echo(f"nothing recorded about client {client_id!r} {where}")
        return
    echo(f"client {client_id!r} {where}:")
    for kind, count in counts.items():
        echo(f"  {count:6d}  {FORGET_LABELS[kind]}")


@click.group("db")
def db_group() -> None:
    """The store's schema and retention."""


@db_group.command("status")
@config_option
@format_option
@reports_errors
def db_status_command(config_path: str | None, output_format: str) -> None:
    """Show the schema version: current, latest, pending steps. Exit 1 when behind."""
    from rulekit.audit.schema import describe, status
    from rulekit.loading import open_config

    _, config = open_config(config_path)
    where, found = status(config)
    if output_format == "json":
        _echo_json(describe(where, found))
    else:
        echo(f"{where}: {found}")
    sys.exit(EXIT_OK if found.up_to_date else EXIT_FAILED)


@db_group.command("upgrade")
@config_option
@reports_errors
def db_upgrade_command(config_path: str | None) -> None:
    """Apply pending schema migrations (the daemon also applies them when it starts)."""
    from rulekit.audit.schema import upgrade
    from rulekit.loading import open_config

    _, config = open_config(config_path)
    where, before, after = upgrade(config)
    if before.current == after.current:
        echo(f"{where}: {after}; nothing to do")
    else:
        echo(f"{where}: upgraded from version {before.current} to {after.current}")


@db_group.command("purge")
@config_option
@format_option
@reports_errors
def db_purge_command(config_path: str | None, output_format: str) -> None:
    """Delete what the config's retention no longer keeps (the daemon does it hourly)."""
    from rulekit.audit.retention import PURGE_LABELS, describe, purge

    config, store = _open(config_path)
    try:
        counts = purge(store, config.raw.retention, _now())
        # what was deleted leaves the write-ahead log too, as after rulekit forget
        flushed = store.checkpoint() if any(counts.values()) else True
    finally:
        store.close()
    if not flushed:
        echo(
            "note: the store's write-ahead log is in use and still holds older copies of the "
            "deleted records; run `rulekit db purge` again when the daemon is idle, or stop it",
            err=True,
        )
    if output_format == "json":
        _echo_json({"purged": counts})
        return
    retention = config.raw.retention
    echo(f"retention: events {describe(retention.events)}, payloads {describe(retention.payloads)}")
    for kind, count in counts.items():
        echo(f"  {count:6d}  {PURGE_LABELS[kind]}")
