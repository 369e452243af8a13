"""Versioned schema migrations, shared shape for every SQL store.

Each backend lists its numbered steps (``rulekit.store.migrations.sqlite``; PostgreSQL will add
its own module with the same versions). A store applies the steps it lacks when it opens, in
one transaction together with their rows in ``schema_version``, so a half-applied step never
exists and two processes opening at once apply them once. A database whose version is newer
than the steps this rulekit knows is refused: an older rulekit must not write to a schema it
does not understand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One numbered schema step."""

    version: int
    name: str
    sql: str


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema stands (``rulekit db status``)."""

    current: int
    """The highest version applied; 0 for an empty database."""
    latest: int
    """The highest version this rulekit knows."""
    pending: tuple[str, ...] = ()
    """Names of the steps not applied yet, in order."""

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest

    @property
    def too_new(self) -> bool:
        return self.current > self.latest

    def __str__(self) -> str:
        if self.too_new:
            return (
                f"schema version {self.current} is newer than this rulekit knows "
                f"({self.latest}); upgrade rulekit"
            )
        if self.up_to_date:
            return f"schema version {self.current} (up to date)"
        steps = ", ".join(self.pending)
        return f"schema version {self.current}, latest {self.latest}; pending: {steps}"


def check_sequence(steps: Sequence[Migration]) -> None:
    """Fail loudly when a backend's steps are not numbered 1, 2, 3, … (a programming error)."""
    versions = [step.version for step in steps]
    if versions != list(range(1, len(steps) + 1)):
        raise RuntimeError(f"migration versions must be 1..{len(steps)} in order, got {versions}")


def status_of(current: int, steps: Sequence[Migration]) -> SchemaStatus:
    """The status of a database at ``current`` given a backend's steps."""
    return SchemaStatus(
        current=current,
        latest=len(steps),
        pending=tuple(f"{s.version:04d}_{s.name}" for s in steps if s.version > current),
    )
