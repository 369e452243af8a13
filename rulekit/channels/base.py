"""The provider contract: how a plugin turns a service's webhooks into events and replies.

A *provider* speaks to a service (``chatra``); a *channel* is what rules see (``online-chat``).
The config maps channel names to providers; each provider names a default channel used when
there is no config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import SecretStr

from rulekit.channels.guarantees import (
    SETTLED,
    keys_safely,
    parses_clean,
    settled,
    timer_events_clean,
)
from rulekit.directory import Directory
from rulekit.event import Agent, Client, Conversation, Event
from rulekit.models import StrictModel
from rulekit.store.base import State

if TYPE_CHECKING:
    from rulekit.actions.pacing import Limit

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

    def fetch_failing(self, problem: str | None) -> None:
        """Say whether fetching works: ``problem`` (one line, with no secret and no client's
        data) while each try fails although nothing is wrong with the provider's code (the
        service refuses the credentials or the fetching, or cannot be reached); None once a
        try worked. Fetching failing so for ``server.stall_after`` shows in ``/healthz``, as a
        fetcher that keeps ending with an exception does."""
        ...


class Provider:
    """Base class of providers. Subclasses set the class attributes and implement :meth:`parse`;
    those that can write to clients (``autoreply``) also implement the reply methods.

    The base class guarantees (:mod:`rulekit.channels.guarantees`), for every subclass, what
    :meth:`parse` is handed: the body as :func:`rulekit.channels.body.for_providers` makes it
    (JSON that passed ingest's checks, without lone surrogates or byte order mark);
    :meth:`conversation_key` is handed the same body already parsed, as
    :func:`rulekit.channels.body.load` returns it.
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
    ``bounded_key`` first. What a provider says of its settings alone (``service_account``,
    :meth:`fetches_updates`, :meth:`reply_problem`, :meth:`update_problem`) is asked once per
    instance, off the event loop, and kept (:func:`rulekit.channels.guarantees.settle`).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "parse" in own and not hasattr(own["parse"], "__wrapped__"):
            cls.parse = parses_clean(own["parse"])  # type: ignore[method-assign]
        if "timer_due" in own and not hasattr(own["timer_due"], "__wrapped__"):
            cls.timer_due = timer_events_clean(own["timer_due"])  # type: ignore[method-assign]
        if "conversation_key" in own and not hasattr(own["conversation_key"], "__wrapped__"):
            cls.conversation_key = keys_safely(own["conversation_key"])  # type: ignore[method-assign]
        for name in SETTLED:
            member = own.get(name)
            if isinstance(member, property) and member.fget is not None:
                if not hasattr(member.fget, "__wrapped__"):
                    setattr(cls, name, property(settled(member.fget), doc=member.__doc__))
            elif callable(member) and not hasattr(member, "__wrapped__"):
                setattr(cls, name, settled(member))

    name: ClassVar[str]
    """The provider's name, as configs write it (``provider: chatra``)."""
    default_channel: ClassVar[str | None] = None
    """The channel this provider offers when no config says otherwise."""
    description: ClassVar[str] = ""
    Settings: ClassVar[type[ChannelSettings]] = ChannelSettings
    """The model of this provider's per-channel settings."""
    can_reply: ClassVar[bool] = False
    agent_reply_reopens: ClassVar[bool] = False
    """Whether an agent writing into a closed conversation opens it again, as :meth:`parse`
    reads the service's webhooks (Chatra: yes; Telegram, whose conversations close and open
    with the user's own activity: no). An agent's reply from the console then does too: its
    event's conversation is open, and so is the stored one."""
    max_reply_length: ClassVar[int | None] = None
    """The longest message text the service takes, in UTF-16 code units (as JavaScript and
    Telegram count: a character beyond U+FFFF, as most emoji are, counts two), or None when it
    sets none. A rule's longer reply is cut to it (ending ``…``); an agent's reply from the
    console is refused instead (:meth:`reply_length_problem`), for the agent to shorten it."""
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
        closing after a quiet spell. Asked by the daemon before the transaction that records
        the event (within the budget of :data:`rulekit.runtime.parsing.PARSE_BUDGET`), which
        sets them, so the timers exist exactly when the event does; a pending timer of the same
        name and conversation is moved to the new due time. Default: none. Must be quick and
        must not raise; the dry run (``rulekit test``) calls it too, and hands the timers
        back to :meth:`timer_due` on its simulated clock."""
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

    def reply_length_problem(self, text: str) -> str | None:
        """Why the service would not take ``text`` whole as one message (longer than
        :attr:`max_reply_length`), or None."""
        limit = self.max_reply_length
        if limit is None:
            return None
        length = len(text.encode("utf-16-le", "surrogatepass")) // 2
        if length <= limit:
            return None
        return (
            f"text is {length} characters long as channel {self.channel!r} counts them (an"
            f" emoji counts two), and the {self.name} provider takes at most {limit} in one"
            " message: shorten it, or send it as two replies"
        )

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

    def sent_message_ids(self, answer: Any) -> list[str]:
        """The ids under which later webhooks will carry the message a reply created, read
        from :meth:`send_reply`'s ``answer`` as :meth:`parse` reads message ids; none by
        default. The daemon marks them seen (:meth:`State.mark_messages_seen
        <rulekit.store.state.State.mark_messages_seen>`) when it records the reply as
        sent, so that the service's echo of it is rulekit's own even where it lacks the tag
        that tells it (a copy in a later transcript, an echo whose tag the service dropped):
        never an agent's reply that cancels a "nobody answered" timer, or fires rules again."""
        return []

    can_update_clients: ClassVar[bool] = False
    """Whether :meth:`update_client` changes client data at the service."""

    def update_problem(self) -> str | None:
        """Why client data cannot be changed at the service with the current settings, or
        None."""
        if not self.can_update_clients:
            return f"the {self.name} provider cannot change client data"
        return None

    def update_fields_problem(self, fields: Collection[str]) -> str | None:
        """Why a change of the client's ``fields`` (of :data:`CLIENT_CONTACT_FIELDS`) would not
        last in rulekit's record of the client (the channel does not keep some of them: its
        next webhook would drop the change), or None. The console refuses such a change."""
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
