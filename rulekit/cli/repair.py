"""``rulekit retry`` (dead letters) and ``rulekit requeue`` (set-aside webhooks): the console's
"retry" and "requeue" from the command line, on the store the config names.

Without ids, each lists what it could act on; with ids, it acts on each and says what became
of it (exit 1 when any id was not found or not in a state to act on). The daemon picks the
work up within a second (its workers poll the store).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rulekit.cli.audit import EXIT_FAILED, _echo_json, _open, format_option, show_content_option
from rulekit.cli.main import STORE_ID, config_option, reports_errors
from rulekit.safetext import echo


def _repair(
    config_path: str | None,
    ids: tuple[int, ...],
    output_format: str,
    *,
    listing: str,
    act: str,
    noun: str,
    key: str,
    show_content: bool,
) -> None:
    from rulekit.audit import repair

    _, store = _open(config_path, writes=bool(ids))  # (a listing only reads)
    results: list[dict[str, Any]] = []
    failed = False

    def shown(state: Any, entry: dict[str, Any]) -> dict[str, Any]:
        return entry if show_content else repair.without_content(state, entry)

    try:
        if not ids:
            with store.reading() as state:
                found = [shown(state, entry) for entry in getattr(repair, listing)(state, None)]
            if output_format == "json":
                _echo_json({listing: found})
                return
            if not found:
                echo(f"no {noun}s")
            for entry in found:
                echo(_line(entry, key))
            return
        work: Callable[..., dict[str, Any]] = getattr(repair, act)
        for number in ids:
            try:
                with store.transaction() as state:
                    results.append({"ok": True, **shown(state, work(state, number, None))})
            except (repair.NotFound, repair.NotRepairable) as exc:
                failed = True
                results.append({"ok": False, key: number, "error": str(exc)})
    finally:
        store.close()
    if output_format == "json":
        _echo_json({"results": results})
    else:
        for result in results:
            if result["ok"]:
                echo(f"{noun} {result[key]}: pending again")
            else:
                echo(f"{noun} {result[key]}: {result['error']}", err=True)
    if failed:
        raise SystemExit(EXIT_FAILED)


def _line(entry: dict[str, Any], key: str) -> str:
    what = entry.get("action") or entry.get("channel")
    where = entry.get("channel") if "action" in entry else entry.get("received_at")
    return f"{entry[key]:>8}  {what}  {where}  {entry.get('error') or ''}".rstrip()


@click.command("retry")
@click.argument("job_ids", nargs=-1, type=STORE_ID)
@config_option
@format_option
@show_content_option
@reports_errors
def retry_command(
    job_ids: tuple[int, ...], config_path: str | None, output_format: str, show_content: bool
) -> None:
    """Send dead letters again: JOB_IDS become pending and the daemon retries them. Without
    ids, list the dead letters (what their errors quote of the client hidden, unless
    --show-content)."""
    _repair(
        config_path,
        job_ids,
        output_format,
        listing="dead_letters",
        act="retry",
        noun="dead letter",
        key="job_id",
        show_content=show_content,
    )


@click.command("requeue")
@click.argument("inbox_ids", nargs=-1, type=STORE_ID)
@config_option
@format_option
@show_content_option
@reports_errors
def requeue_command(
    inbox_ids: tuple[int, ...], config_path: str | None, output_format: str, show_content: bool
) -> None:
    """Process set-aside webhooks again: INBOX_IDS become pending and the daemon processes them
    from the start. Without ids, list the set-aside webhooks (their bodies, and what their
    errors quote of them, hidden unless --show-content)."""
    _repair(
        config_path,
        inbox_ids,
        output_format,
        listing="set_aside",
        act="requeue",
        noun="set-aside webhook",
        key="inbox_id",
        show_content=show_content,
    )
