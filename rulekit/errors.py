"""The error hierarchy.

Only the CLI (and the daemon's HTTP layer) turn these into one-line messages and exit codes;
everything else raises them with enough context to be precise: a file, a line, a field path.
Unexpected exceptions are never wrapped, so they keep their traceback.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar


class RulekitError(Exception):
    """Base class of every error rulekit reports to a user."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where in a source file something was written (lines are 1-based)."""

    file: str
    line: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.path}" if self.path else where


MAX_LOCATED_ERROR = 1_000
"""Characters of an error about what a person wrote: a value it quotes (a rule's name of
900,000 characters, an expression of 17,000) is elided in the middle, keeping the start and
the reason, so that one such value cannot make every line of ``rulekit check`` a megabyte."""


def elide(text: str, limit: int = MAX_LOCATED_ERROR) -> str:
    """``text``, or its start and end around a mark saying how much was left out."""
    if len(text) <= limit:
        return text
    head, tail = limit * 3 // 5, limit * 3 // 10
    return f"{text[:head]}…[{len(text) - head - tail} characters]…{text[-tail:]}"


class LocatedError(RulekitError):
    """An error about something a person wrote, with where they wrote it (both cut to
    :data:`MAX_LOCATED_ERROR` characters by :func:`elide`)."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        message = elide(message)
        if location is not None and len(location.path) > MAX_LOCATED_ERROR:
            location = Location(location.file, location.line, elide(location.path))
        super().__init__(message)
        self.message = message
        self.location = location

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class ConfigError(LocatedError):
    """The configuration file is unreadable or invalid."""


class RuleError(LocatedError):
    """A rules file is unreadable or a rule in it is invalid."""


class PluginError(RulekitError):
    """A plugin is broken: a misspelled hook, a duplicate name, a failed import."""


class ChannelError(RulekitError):
    """A provider could not turn an incoming payload into events (malformed or unsupported)."""


class TemplateError(RulekitError):
    """A template or expression failed to compile or to render (sandbox, size or work limits)."""


MAX_RETRY_AFTER = 3600.0
"""The longest pause a service's answer can impose (seconds): a Retry-After of a year, or of a
date in 9999, pauses its destination (or the whole service) for an hour, then the call is tried
again, instead of stalling every message to it until a restart."""


def service_wait(seconds: float | None) -> float | None:
    """A wait a service asked for, as the dispatcher may honour it: within 0 and
    :data:`MAX_RETRY_AFTER`; None when it is not a finite number."""
    if seconds is None or isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(float(seconds), 0.0), MAX_RETRY_AFTER)


MAX_ACTION_ERROR = 2_000
"""Characters of an action's error message kept: the rest of what a service said (a 50 MB
answer quoted as its error code) is cut, saying how much was left out."""


class ActionError(RulekitError):
    """An action failed. ``retryable`` tells the dispatcher whether to try again.

    ``retry_after`` (seconds) is the service's own wish, when it said one (HTTP Retry-After,
    Telegram flood control), bounded by :func:`service_wait` whoever raises the error;
    ``scope`` names what must pause: by default only the destination, ``"service"`` when the
    whole bot or account is throttled. ``progress`` is what the call got done before it failed
    (an email some of whose recipients took it): kept with the job, and handed to its next
    attempt (:attr:`~rulekit.actions.base.ActionContext.progress`), which goes on from there.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        scope: str = "destination",
        status: int | None = None,
        progress: dict[str, Any] | None = None,
    ) -> None:
        if len(message) > MAX_ACTION_ERROR:
            message = (
                f"{message[:MAX_ACTION_ERROR]}…[{len(message) - MAX_ACTION_ERROR} more characters]"
            )
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = service_wait(retry_after)
        self.scope = scope
        self.status = status
        self.progress = progress


class RetryableActionError(ActionError):
    """A failure worth retrying: rate limits, 5xx, timeouts, connection errors."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        scope: str = "destination",
        status: int | None = None,
        progress: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message,
            retryable=True,
            retry_after=retry_after,
            scope=scope,
            status=status,
            progress=progress,
        )


class PermanentActionError(ActionError):
    """A failure that will not go away by retrying: bad token, unknown chat, other 4xx."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        scope: str = "destination",
        status: int | None = None,
        progress: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            message,
            retryable=False,
            retry_after=retry_after,
            scope=scope,
            status=status,
            progress=progress,
        )


class StoreError(RulekitError):
    """The store cannot be used as asked: an unsupported storage URL, a schema this version of
    rulekit does not know, a store used after it was closed."""


class StoreUnavailable(StoreError):
    """The store cannot persist right now: read-only or missing file, full disk, I/O error,
    locked past the busy timeout. The daemon answers 503 (never 200) while this is raised, so
    the sender retries later and nothing acknowledged is lost."""


class StoreConflict(StoreUnavailable):
    """The database aborted a transaction because of another one (a deadlock, a serialization
    failure): running it again is expected to succeed."""


class ClaimLost(RulekitError):
    """Work is no longer held by the daemon that claimed it: its claim ran out while the daemon
    was held up (a long pause of the process or the machine), and another daemon took it over.
    Nothing of it is to be recorded by the first one."""

    def __init__(self, ids: Iterable[int]) -> None:
        self.ids = sorted(ids)
        super().__init__(f"claims of {self.ids} were taken over")

    def __reduce__(self) -> tuple[type[ClaimLost], tuple[list[int]]]:
        return type(self), (self.ids,)


MAX_LISTED = 200
"""Errors (or warnings) one pass lists; one more line says how many more it found. A rules
file of 60,000 unknown keys made 60,000 errors, 12 MB printed by ``rulekit check`` and logged
and published to the console by every refused reload."""

E = TypeVar("E", bound="LocatedError")


def listed(errors: list[E], make: Callable[[str], E], what: str = "errors") -> list[E]:
    """The first :data:`MAX_LISTED` of ``errors``, and one made by ``make`` saying how many
    more ``what`` there are (none when there are no more)."""
    if len(errors) <= MAX_LISTED + 1:
        return errors
    more = len(errors) - MAX_LISTED
    return [
        *errors[:MAX_LISTED],
        make(f"{more} more {what}, not listed (the first {MAX_LISTED} are)"),
    ]


class ValidationErrors(RulekitError):
    """Several located errors found in one pass (all files, all rules), reported together:
    the first :data:`MAX_LISTED` of them, ``total`` saying how many there were."""

    def __init__(self, errors: Iterable[LocatedError], total: int | None = None) -> None:
        found = list(errors)
        self.total = len(found) if total is None else total
        self.errors = listed(found, LocatedError)
        super().__init__("\n".join(str(e) for e in self.errors))

    def __reduce__(self) -> tuple[type[ValidationErrors], tuple[list[LocatedError], int]]:
        # made again from the errors (the rules are validated in another process)
        return type(self), (self.errors, self.total)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A "did you mean" suffix for ``word`` among ``choices``, or an empty string. Letter case
    does not count against a choice (``CRM`` suggests ``crm``)."""
    by_case = {choice.casefold(): choice for choice in reversed(list(choices))}
    close = difflib.get_close_matches(word.casefold(), list(by_case), n=1, cutoff=0.6)
    return f" (did you mean {by_case[close[0]]!r}?)" if close else ""
