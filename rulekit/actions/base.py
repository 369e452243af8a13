"""The action contract: parameters, dry-run description, and execution.

An action class declares:

* ``name`` — what a rule's ``do:`` list writes (``slack``);
* ``Params`` — the pydantic model of its parameters, validated when rules load (templates are
  rendered first, then the rendered values are validated again);
* ``markup_fields`` and :meth:`escaper` — which parameters are markup for the target, and how
  values interpolated into them are escaped (literal template text stays the admin's markup);
* ``integration`` and ``Integration`` — the config section (``integrations: {slack: ...}``) and
  its model, when the action talks to an outside service;
* ``client_facing`` — whether it writes to the client (then ``recovered`` events are skipped
  unless the rule says otherwise).

An instance is built per loaded config with the integration's settings (or ``None`` when the
config has none), describes what it would do (``rulekit test``), and executes (``rulekit run``).
It may keep network clients between calls (one Slack client, one Telegram bot); whoever built
it calls :meth:`Action.aclose` when done. :meth:`Action.pacing` names the rate limits a call is
subject to, for :class:`rulekit.pacing.Pacer`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel

from rulekit.event import Event
from rulekit.models import StrictModel
from rulekit.pacing import Limit, Pace

if TYPE_CHECKING:
    from rulekit.channels.base import Provider
    from rulekit.config import Config
    from rulekit.store.base import Store

DEFAULT_TIMEOUT = 10.0
"""Seconds an action may take before it counts as a (retryable) timeout."""


@dataclass
class ActionContext:
    """What an action sees when it describes or executes one planned call."""

    event: Event
    config: Config
    provider: Provider | None = None
    """The provider of the event's channel (``autoreply`` writes through it)."""
    store: Store | None = None
    """Conversation state (``assign`` reads and changes it); None in a pure dry run."""
    publish: Callable[[dict[str, Any]], Awaitable[None] | None] | None = None
    """Publishes to the daemon's live stream (``play_sound``); None when nothing listens."""
    emitted: list[Event] = field(default_factory=list)
    """Events the action caused (origin ``rulekit``), e.g. ``assigned``."""


class Action:
    """Base class of actions."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Params: ClassVar[type[StrictModel]]
    integration: ClassVar[str | None] = None
    Integration: ClassVar[type[StrictModel] | None] = None
    markup_fields: ClassVar[tuple[str, ...]] = ()
    client_facing: ClassVar[bool] = False
    timeout: float = DEFAULT_TIMEOUT
    limits: dict[str, Limit] = {}
    """The service's rate limits by name (e.g. ``chat``, ``bot``), used by :meth:`pacing`."""

    def __init__(
        self,
        settings: BaseModel | None = None,
        *,
        limits: dict[str, Limit] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.settings = settings
        self.limits = {**type(self).limits, **(limits or {})}
        if timeout is not None:
            self.timeout = timeout

    def __repr__(self) -> str:
        # never the settings: they hold credentials
        return f"<{type(self).__name__} action {self.name!r}>"

    @classmethod
    def escaper(cls, params: dict[str, Any]) -> Callable[[str], str] | None:
        """How values interpolated into ``markup_fields`` are escaped, given the raw params
        (e.g. Telegram's ``parse_mode``); None for plain text."""
        return None

    @classmethod
    def check(cls, params: BaseModel, channels: list[str], config: Config) -> list[str]:
        """Load-time cross-checks against the config; returns error messages (may be empty)."""
        return []

    def unavailable(self, context: ActionContext | None = None) -> str | None:
        """Why this action would fail as configured ("Slack is not configured"), or None."""
        return None

    def destination(self, params: BaseModel) -> str:
        """The key of the destination pacing applies to (a Slack channel, a Telegram chat)."""
        return self.name

    def pacing(self, params: BaseModel) -> list[Pace]:
        """The limits a call with ``params`` is subject to, destination first (see
        :mod:`rulekit.pacing`); empty when the action needs no pacing."""
        return []

    def describe(self, params: BaseModel, context: ActionContext) -> str:
        """Exactly what :meth:`execute` would do, in one line, for ``rulekit test``."""
        return f"{self.name} {params.model_dump(mode='json')}"

    async def execute(self, params: BaseModel, context: ActionContext) -> dict[str, Any]:
        """Do it. Returns a result for the audit (e.g. the message id the service gave).

        Raises :class:`rulekit.errors.RetryableActionError` or
        :class:`rulekit.errors.PermanentActionError`, keeping the service's own message.
        """
        raise NotImplementedError(f"action {self.name!r} cannot execute")

    async def aclose(self) -> None:
        """Release network clients kept between calls. The instance may be used again after."""
