"""The provider contract: how a plugin turns a service's webhooks into events and replies.

A *provider* speaks to a service (``chatra``); a *channel* is what rules see (``online-chat``).
The config maps channel names to providers; each provider names a default channel used when
there is no config.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import SecretStr

from rulekit.channels.body import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_KEY_CHARS,
    bounded_key,
    bounded_time,
    for_providers,
)
from rulekit.config import Directory
from rulekit.event import Agent, Client, Conversation, Event
from rulekit.models import StrictModel
from rulekit.store.base import State

if TYPE_CHECKING:
    from rulekit.actions.pacing import Limit

logger = logging.getLogger("rulekit.channels")

ACCOUNT_DIGEST_CHARS = 16
"""The hex digits of :func:`account_digest` (64 bits: two accounts never meet by chance)."""


def account_digest(service: str, *credentials: str | SecretStr | None) -> str:
    """A stable identifier of the account ``credentials`` (API keys, a token, the base URL)
    open at ``service``, for :attr:`Provider.service_account`: ``service:`` and a SHA-256
    digest of them, cut to 16 hex digits. It reveals none of them (they are not in it, nor can
    they be worked back from it), so it may appear in pacer keys, the shared pacing table,
    metrics and logs; the same credentials give the same identifier in every daemon."""
    digest = hashlib.sha256(b"rulekit service account\x00" + service.encode())
    for part in credentials:
        value = part.get_secret_value() if isinstance(part, SecretStr) else (part or "")
        digest.update(b"\x00" + value.encode("utf-8", "surrogatepass"))
    return f"{service}:{digest.hexdigest()[:ACCOUNT_DIGEST_CHARS]}"


class ChannelSettings(StrictModel):
    """Settings every channel has; providers subclass this with their own.

    ``webhook_secret`` is the token in the webhook URL (``/webhooks/<channel>/<secret>``);
    ``default_group`` is the group new conversations land in.
    """

    webhook_secret: SecretStr | None = None
    default_group: str | None = None


@dataclass(frozen=True)
class ChannelContext:
    """What a provider instance is built with."""

    channel: str
    settings: ChannelSettings
    directory: Directory


@dataclass(frozen=True)
class Reply:
    """What a provider needs to write to a client in a conversation: ``agent`` is who writes
    (an agent replying in the console); None: the provider's usual sender (the conversation's
    assignee, or its default)."""

    conversation: Conversation
    client: Client
    text: str
    agent: Agent | None = None


@dataclass(frozen=True)
class ChannelTimer:
    """A durable timer a channel asks for (:meth:`Provider.channel_timers`): when it is due,
    the daemon hands it back to :meth:`Provider.timer_due`.

    ``name`` says what it is for (``close_after``); a conversation has at most one pending
    timer of each name, and asking again moves it to the new ``due`` (activity restarts an
    idle timer). Kept in the store like a timed rule's timer: it survives restarts and
    ``kill -9``, and with several daemons exactly one of them fires it."""

    name: str
    conversation_id: str
    due: datetime


CHANNEL_TIMER_PREFIX = "@"
"""The store keeps a channel's timers beside the timed rules', under the "rule" name
``@<channel>:<name>``; a rule's name cannot start with ``@``."""


def channel_timer_rule(channel: str, name: str) -> str:
    """The name a channel timer is stored under."""
    return f"{CHANNEL_TIMER_PREFIX}{channel}:{name}"


def parse_channel_timer_rule(rule: str) -> tuple[str, str] | None:
    """``(channel, name)`` of a stored channel timer, or None for a timed rule's timer."""
    if not rule.startswith(CHANNEL_TIMER_PREFIX) or ":" not in rule:
        return None
    channel, _, name = rule[len(CHANNEL_TIMER_PREFIX) :].rpartition(":")
    return channel, name


CLIENT_CONTACT_FIELDS: tuple[str, ...] = ("name", "email", "phone", "notes")
"""The client fields an agent may change (:meth:`Provider.update_client`)."""


class Inbound(Protocol):
    """Where a provider that fetches its own updates (:meth:`Provider.fetch_updates`) hands
    them: the daemon's inbox, as for a webhook."""

    async def accept(
        self, body: bytes, *, delivery_key: str, conversation_key: str | None = None
    ) -> bool:
        """Keep ``body`` in the inbox, committed, before returning: True when it is new, False
        when ``delivery_key`` was kept before. Raises :class:`rulekit.errors.ChannelError` for a
        body no provider can accept (over the size limit, not a JSON object) and
        :class:`rulekit.errors.StoreUnavailable` when nothing could be kept (try again)."""
        ...

    async def hold(self, name: str, seconds: float) -> bool:
        """Take, or renew, the lease ``name`` for this daemon for ``seconds``; True when this
        daemon holds it (no other daemon held it unexpired). One daemon of several sharing a
        store does the fetching."""
        ...

    async def service_paused(self) -> float:
        """Seconds left of the pause of the channel's service (0: not paused): a Retry-After
        that one of the dispatcher's calls through the channel's provider met (a reply, a
        change of client data), or that :meth:`pause_service` reported; with several daemons
        sharing the store, one met by any of them. A provider that calls its service while
        fetching waits for it before each call."""
        ...

    async def pause_service(self, seconds: float) -> None:
        """Pause every call to the channel's service for ``seconds`` from now (an existing
        longer pause stays): the dispatcher's calls through the provider wait for it as for a
        Retry-After they met themselves, and so do the other daemons sharing the store. For a
        rate limit the service answered to a fetch (its Retry-After, or a backoff when it
        gave none)."""
        ...


class Provider:
    """Base class of providers. Subclasses set the class attributes and implement :meth:`parse`;
    those that can write to clients (``autoreply``) also implement the reply methods.

    The base class guarantees, for every subclass, what :meth:`parse` is handed: the body as
    :func:`rulekit.channels.body.for_providers` makes it (JSON that passed ingest's checks,
    without lone surrogates or byte order mark); :meth:`conversation_key` is handed the same
    body already parsed, as :func:`rulekit.channels.body.load` returns it.
    The key :meth:`conversation_key` returns, and the ids of the events :meth:`parse` returns
    (event, conversation, client, message, agent), are made fit to store and index by
    :func:`rulekit.channels.body.bounded_key` (no surrogates, a very long id becomes its
    digest) and are the channel's own (an event or conversation id that does not start with
    ``<channel>:`` is given that prefix, and the event's ``channel`` is the provider's); their
    times are made fit to compute with by
    :func:`rulekit.channels.body.bounded_time` (one outside it is unknown: ``occurred_at``
    becomes the time the event is read, the others None). A provider reads the times it keeps
    in the state itself (a client's last visit) through ``bounded_time`` too. An exception
    from :meth:`conversation_key` counts as "cannot tell" (None). An id a provider stores
    itself while parsing (``state.mark_message_seen``) must go through
    ``bounded_key`` first.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "parse" in own and not hasattr(own["parse"], "__wrapped__"):
            cls.parse = _parses_clean(own["parse"])  # type: ignore[method-assign]
        if "timer_due" in own and not hasattr(own["timer_due"], "__wrapped__"):
            cls.timer_due = _timer_events_clean(own["timer_due"])  # type: ignore[method-assign]
        if "conversation_key" in own and not hasattr(own["conversation_key"], "__wrapped__"):
            cls.conversation_key = _keys_safely(own["conversation_key"])  # type: ignore[method-assign]

    name: ClassVar[str]
    """The provider's name, as configs write it (``provider: chatra``)."""
    default_channel: ClassVar[str | None] = None
    """The channel this provider offers when no config says otherwise."""
    description: ClassVar[str] = ""
    Settings: ClassVar[type[ChannelSettings]] = ChannelSettings
    """The model of this provider's per-channel settings."""
    can_reply: ClassVar[bool] = False
    reply_limits: ClassVar[Mapping[str, Limit]] = {}
    """The service's rate limits on replies, by scope: ``conversation`` (one client's chat)
    and ``service`` (everything the account sends); the dispatcher paces replies by them."""

    def __init__(self, context: ChannelContext) -> None:
        self.channel = context.channel
        self.settings = context.settings
        self.directory = context.directory

    @property
    def service_account(self) -> str:
        """A stable, non-secret identifier of the account (the credentials) this channel calls
        its service with: the service's rate limit belongs to the account, so its pauses do
        too. Every call that shares it waits for a Retry-After any of them met — the
        dispatcher's calls through the provider (a reply, a change of client data) and the
        provider's own fetching (:meth:`Inbound.service_paused`), on every channel that
        returns the same identifier, in every daemon sharing the store.

        The identifier ends up in pacer keys, the shared pacing table, logs and metrics: it
        must never hold a secret (nor a key that opens the account). Build it with
        :func:`account_digest` from whatever tells accounts apart (the API keys or token and
        the base URL). By default, the channel's name: each channel is an account of its own.
        The per-conversation lanes and :attr:`reply_limits` stay per channel."""
        return self.channel

    def parse(self, body: bytes, state: State) -> list[Event]:
        """Turn one raw webhook body into normalized events, in order.

        Reads and updates conversation state through ``state`` (never through globals).
        Returns an empty list for a delivery that carries nothing new (a redelivery, an echo of
        rulekit's own reply). Raises :class:`rulekit.errors.ChannelError` for a body it cannot
        accept, and no other exception for any input.
        """
        raise NotImplementedError

    def conversation_key(self, data: Any) -> str | None:
        """The key of the conversation a webhook belongs to, read cheaply when it arrives
        (before :meth:`parse`), or None when it cannot tell.

        ``data`` is the body as ingest parsed it once to check it
        (:func:`rulekit.channels.body.load`): a dict or a list of JSON values, lone surrogates
        replaced, never the raw bytes (so the body is not parsed twice for every webhook).
        Daemons sharing a database use the key to keep each conversation's events in order:
        only the oldest unprocessed delivery of a conversation is handed out. Must not raise.
        """
        return None

    def authorize_webhook(self, headers: Mapping[str, str]) -> bool:
        """Whether a webhook request with these headers (lower-case names) comes from the
        service, for services that sign or tag their requests; checked after the URL's secret.
        False is answered like a wrong secret (404). Must not raise."""
        return True

    def fetches_updates(self) -> bool:
        """Whether this channel fetches updates itself (long polling instead of webhooks, or
        data its webhooks leave out, like Chatra's ``fetch_client``); then the daemon runs
        :meth:`fetch_updates`."""
        return False

    async def fetch_updates(self, inbound: Inbound) -> None:
        """Fetch updates from the service and hand each to ``inbound`` until cancelled.

        Acknowledge an update to the service only after :meth:`Inbound.accept` returned, so
        that none is lost; recover from the service's and the store's failures by waiting and
        trying again (this task is not restarted). The daemon runs it while the channel is
        configured, cancels it on shutdown and restarts it when the config changes.
        """
        raise NotImplementedError(f"the {self.name} provider does not fetch updates")

    def channel_timers(self, event: Event) -> list[ChannelTimer]:
        """Durable timers this channel wants once ``event`` (one :meth:`parse` returned) is
        recorded: for a service that never says when something happens, such as a chat
        closing after a quiet spell. Called by the daemon in the transaction that records the
        event, so the timers exist exactly when the event does; a pending timer of the same
        name and conversation is moved to the new due time. Default: none. Must be quick and
        must not raise; the dry run (``rulekit test``) does not call it."""
        return []

    def timer_due(self, timer: ChannelTimer, state: State) -> list[Event]:
        """One of this channel's timers is due (it fires at most once): the events it means,
        in order, like :meth:`parse` (reading and updating conversation state through
        ``state``), or none when nothing happened after all (the conversation closed or was
        active meanwhile). Give each event an id derived from the timer's cause, so that an
        event the provider could also derive later from an update (e.g. on the next message)
        is recorded once. The events are evaluated and recorded like a webhook's; the
        timer's ``due`` is when it fell due (the daemon may be late)."""
        return []

    def reply_problem(self) -> str | None:
        """Why replies cannot be sent with the current settings (e.g. missing API keys), or None."""
        return None if self.can_reply else f"the {self.name} provider cannot write to clients"

    def sender_problem(self, conversation: Conversation) -> str | None:
        """Why a reply in ``conversation`` could not be sent for want of someone to send it as
        (no assignee and no default sender), or None."""
        return None

    def describe_reply(self, reply: Reply) -> str:
        """A one-line dry-run description of what :meth:`send_reply` would do."""
        return f"reply through {self.name} to client {reply.client.id}: {reply.text!r}"

    async def send_reply(self, reply: Reply, *, timeout: float) -> dict[str, Any]:
        """Send ``reply.text`` to the client; return what the service answered (for the audit).

        Raises :class:`rulekit.errors.RetryableActionError` (429, 5xx, timeouts, connection
        errors) or :class:`rulekit.errors.PermanentActionError` (other 4xx), keeping the
        service's message.
        """
        raise NotImplementedError(f"the {self.name} provider cannot write to clients")

    can_update_clients: ClassVar[bool] = False
    """Whether :meth:`update_client` changes client data at the service."""

    def update_problem(self) -> str | None:
        """Why client data cannot be changed at the service with the current settings, or
        None."""
        if not self.can_update_clients:
            return f"the {self.name} provider cannot change client data"
        return None

    async def update_client(
        self, client_id: str, changes: dict[str, str | None], *, timeout: float
    ) -> dict[str, Any]:
        """Change a client's contact data at the service: ``changes`` maps fields of
        :data:`CLIENT_CONTACT_FIELDS` to their new value (None clears one); return what the
        service answered. Raises like :meth:`send_reply`."""
        raise NotImplementedError(f"the {self.name} provider cannot change client data")

    async def aclose(self) -> None:
        """Release network resources (HTTP clients)."""


_NOT_YET = object()


def _own_key(key: str, own: str) -> str:
    """``key`` as an id of the channel whose ids start with ``own``: given that prefix when it
    lacks it, and what follows the prefix made fit to store (:func:`bounded_key`: NUL and lone
    surrogates replaced, a long one its digest). A key made so is kept as it is."""
    rest = key[len(own) :] if key.startswith(own) else key
    return own + (bounded_key(rest) or rest)


def _bounded(events: list[Event], channel: str) -> list[Event]:
    own = channel + ":"
    skip = len(own)
    # (the id checks below: a body's events share their conversation or client objects, and
    # one already made fit is not checked again, ``bounded_key`` of a bounded id being that id)
    checked_conversation: object = _NOT_YET
    checked_client: object = _NOT_YET
    for event in events:
        # (the event's fields read from its ``__dict__``: each attribute of a pydantic model is
        # read through its ``__getattr__`` hook, and set through its ``__setattr__``)
        fields = event.__dict__
        # a channel's events and conversations are its own: an id that does not say so is
        # made to (else a sender on one channel could take another's ids, and record first
        # the event another channel's webhook will mean, which then runs no action)
        if fields["channel"] != channel or "channel" not in event.__pydantic_fields_set__:
            event.channel = channel
        # (and what follows the prefix is bounded, the prefix kept: the same id for every event
        # that shares the conversation, whichever sees it first, and an id made so kept as it is)
        key = fields["id"]
        if (
            not (
                key.startswith(own)
                and 0 < len(key) - skip <= MAX_KEY_CHARS
                and key.isascii()
                and "\x00" not in key
            )
            and (made := _own_key(key, own)) != key
        ):
            event.id = made
        conversation = fields["conversation"]
        if conversation is not checked_conversation:
            part_id = conversation.id
            if part_id is None or (
                (
                    part_id.startswith(own)
                    and 0 < len(part_id) - skip <= MAX_KEY_CHARS
                    and part_id.isascii()
                    and "\x00" not in part_id
                )
                or (made := _own_key(part_id, own)) == part_id
            ):
                checked_conversation = conversation
            else:  # a copy: the conversation the provider's state holds is left as it is
                event.conversation = conversation.model_copy(update={"id": made})
        occurred = fields["occurred_at"]
        if (occurred.tzinfo is None or not EARLIEST_TIME <= occurred <= LATEST_TIME) and not (
            EARLIEST_TIME <= _aware(occurred) <= LATEST_TIME
        ):
            event.occurred_at = datetime.now(UTC)
        # (what ``_bound_times`` checks, written out for the usual event: its message's time and
        # the client's last visit aware and in range, or none, and the conversation's none)
        written = fields["message"].created_at
        visit = fields["client"].last_visit
        conversation = fields["conversation"]
        if not (
            (
                written is None
                or (written.tzinfo is not None and EARLIEST_TIME <= written <= LATEST_TIME)
            )
            and (
                visit is None
                or (visit.tzinfo is not None and EARLIEST_TIME <= visit <= LATEST_TIME)
            )
            and conversation.last_client_message_at is None
            and conversation.last_agent_reply_at is None
            and conversation.first_agent_reply_at is None
        ):
            _bound_times(event)
        # the usual id of the other parts (ASCII without NUL, not too long) is kept as it is:
        # checked in line, each part written out
        client = fields["client"]
        if client is not checked_client:
            checked_client = client
            part_id = client.id
            if part_id is not None and not (
                0 < len(part_id) <= MAX_KEY_CHARS and part_id.isascii() and "\x00" not in part_id
            ):
                client.id = bounded_key(part_id)
        message = fields["message"]
        part_id = message.id
        if part_id is not None and not (
            0 < len(part_id) <= MAX_KEY_CHARS and part_id.isascii() and "\x00" not in part_id
        ):
            message.id = bounded_key(part_id)
        agent = fields["agent"]
        part_id = agent.id
        if part_id is not None and not (
            0 < len(part_id) <= MAX_KEY_CHARS and part_id.isascii() and "\x00" not in part_id
        ):
            agent.id = bounded_key(part_id)
    return events


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


_TIMES = (
    ("message", ("created_at",)),
    ("client", ("last_visit",)),
    ("conversation", ("last_client_message_at", "last_agent_reply_at", "first_agent_reply_at")),
)


def _bound_times(event: Event) -> None:
    """The event's times from outside, each None when :func:`bounded_time` says it is unknown
    (the part is replaced, never changed: it may be shared with the state)."""
    for part_name, names in _TIMES:
        part = getattr(event, part_name)
        had = part.__dict__
        wrong = {
            name: None
            for name in names
            if had[name] is not None and bounded_time(had[name]) is None
        }
        if wrong:
            setattr(event, part_name, part.model_copy(update=wrong))


def _parses_clean(parse: Callable[..., list[Event]]) -> Callable[..., list[Event]]:
    @functools.wraps(parse)
    def wrapper(self: Provider, body: bytes, state: State) -> list[Event]:
        return _bounded(parse(self, for_providers(body), state), self.channel)

    return wrapper


def _timer_events_clean(timer_due: Callable[..., list[Event]]) -> Callable[..., list[Event]]:
    @functools.wraps(timer_due)
    def wrapper(self: Provider, timer: ChannelTimer, state: State) -> list[Event]:
        return _bounded(timer_due(self, timer, state), self.channel)

    return wrapper


def _keys_safely(conversation_key: Callable[..., str | None]) -> Callable[..., str | None]:
    @functools.wraps(conversation_key)
    def wrapper(self: Provider, data: Any) -> str | None:
        try:
            key = conversation_key(self, data)
        except Exception:  # the contract says it must not raise; a plugin's bug costs no webhook
            logger.warning("provider %s: conversation_key failed", self.name, exc_info=True)
            return None
        return bounded_key(key)

    return wrapper
