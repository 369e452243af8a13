"""``rulekit stats`` (and the console's Admin view): per rule, how many events it matched, what
became of its actions (done, failed attempts, dead-lettered, pending) and when it last fired.

The numbers come from the journal (:meth:`rulekit.store.base.Journal.rule_stats`), so they
cover what retention keeps (``retention.events``). Rules that are loaded but matched nothing in
the period are listed with zeros: a rule that never fires is what an admin looks for. Rules
that matched but are no longer loaded are listed too, marked as such.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, tzinfo
from typing import Any

from rulekit.safetext import text_lines
from rulekit.store.base import JournaledState
from rulekit.store.records import RuleStats

COLUMNS = ("matched", "done", "failed", "dead", "pending")


def rule_stats(
    state: JournaledState, *, since: datetime | None, loaded: list[str] | None = None
) -> list[tuple[RuleStats, bool]]:
    """Each rule's numbers since ``since`` and whether it is loaded: the ``loaded`` rules in
    their order (those with nothing counted as zeros), then the others by name. Without
    ``loaded`` (the rules could not be read), the counted rules only, all as loaded."""
    counted = {row.rule: row for row in state.rule_stats(since=since)}
    if loaded is None:
        return [(row, True) for row in counted.values()]
    rows = [(counted.pop(name, RuleStats(name)), True) for name in loaded]
    return rows + [(row, False) for row in counted.values()]


def as_document(rows: list[tuple[RuleStats, bool]], *, since: datetime | None) -> dict[str, Any]:
    """The ``--format json`` document (and ``GET /console/api/stats``)."""
    out = []
    for row, loaded in rows:
        item = asdict(row)
        item["last_fired"] = row.last_fired.isoformat() if row.last_fired else None
        item["loaded"] = loaded
        out.append(item)
    return {"since": since.isoformat() if since else None, "rules": out}


def as_text(rows: list[tuple[RuleStats, bool]], *, timezone: tzinfo) -> str:
    """A table: one line per rule."""
    if not rows:
        return "no rules and nothing recorded\n"
    # "(console)" and the like are rulekit's own jobs, never a rule of the files
    names = [
        row.rule + ("" if loaded or row.rule.startswith("(") else " (not loaded)")
        for row, loaded in rows
    ]
    width = max(len("rule"), *(len(name) for name in names))
    lines = [f"{'rule':<{width}}  " + "  ".join(f"{c:>7}" for c in COLUMNS) + "  last fired"]
    for name, (row, _) in zip(names, rows, strict=True):
        counts = "  ".join(f"{getattr(row, c):>7}" for c in COLUMNS)
        last = (
            row.last_fired.astimezone(timezone).strftime("%Y-%m-%d %H:%M")
            if row.last_fired
            else "never"
        )
        lines.append(f"{name:<{width}}  {counts}  {last}")
    return text_lines(lines)
