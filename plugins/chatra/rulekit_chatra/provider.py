"""The ``chatra`` provider: Chatra webhooks in, replies to visitors out."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from rulekit.actions.telegram_text import truncate
from rulekit.channels import ChannelContext, Provider, Reply
from rulekit.channels.base import Inbound, account_digest
from rulekit.channels.session import LoopSession
from rulekit.errors import PermanentActionError
from rulekit.event import Conversation, Event
from rulekit.store.base import State

from .api import ChatraAPI
from .fetch import TIMEOUT as FETCH_TIMEOUT
from .fetch import ClientFetcher
from .normalize import Normalizer
from .payload import FETCHED, client_key, identifier, parse_body
from .settings import ChatraSettings

if TYPE_CHECKING:
    import aiohttp

MAX_TEXT = 5000
"""The longest message text Chatra's ``POST /messages/`` takes (it refuses a longer one, and an
empty one); counted, like the JavaScript Chatra runs on, in UTF-16 code units."""


_EMPTY = "the reply's text is empty (Chatra takes 1 to 5000 characters): check the template"


def fitted(text: str) -> str:
    """``text`` as Chatra takes it: cut to :data:`MAX_TEXT` (ending with ``…``) when longer, as
    a Telegram reply is cut to Telegram's limit, rather than refused and lost whole."""
    return truncate(text, None, MAX_TEXT)


class ChatraProvider(Provider):
    """The Chatra live chat. Its default channel is ``online-chat``.

    :meth:`parse` turns a ``chatStarted``, ``chatFragment`` or ``chatTranscript`` webhook body into
    normalized events (see :mod:`rulekit_chatra.normalize`); :meth:`send_reply` writes to the
    visitor through ``POST /messages/``, as the conversation's assignee, or else as the
    channel's default sender (``default_agent_id`` or ``default_agent``).
    """

    name = "chatra"
    default_channel = "online-chat"
    description = "Chatra live chat: webhooks in, replies through the REST API"
    Settings = ChatraSettings
    can_reply = True
    agent_reply_reopens = True
    max_reply_length = MAX_TEXT

    settings: ChatraSettings

    def __init__(self, context: ChannelContext) -> None:
        super().__init__(context)
        if not isinstance(self.settings, ChatraSettings):
            self.settings = ChatraSettings.model_validate(self.settings.model_dump())
        self.normalizer = Normalizer(self.channel, self.settings, self.directory)
        self._sessions = LoopSession()
        self.fetcher = (
            ClientFetcher(self.settings.client_data) if self.settings.fetch_client else None
        )
        """The clients to fetch from Chatra's API (``fetch_client``); None when off."""

    @property
    def service_account(self) -> str:
        """The Chatra account: a digest of the API public key and base URL (Chatra's rate limit
        is per account, so channels with the same keys, such as two sites' widgets, share
        their pauses). Never the key itself; without one, the channel's name."""
        if not self.settings.public_key:
            return self.channel
        return account_digest(
            self.name, self.settings.public_key, self.settings.base_url.rstrip("/")
        )

    # webhooks --------------------------------------------------------------------------------
    def parse(self, body: bytes, state: State) -> list[Event]:
        """Turn one Chatra webhook body into events; see :meth:`Provider.parse`. With
        ``fetch_client``, a client the events leave without some of its data is queued to be
        fetched (:mod:`rulekit_chatra.fetch`)."""
        payload = parse_body(body)
        events = self.normalizer.events(payload, state)
        fetcher = self.fetcher
        if fetcher is not None and events and payload.event_name != FETCHED:
            if fetcher.lacks(events[-1].client):
                fetcher.want(payload.client.id)
        return events

    def fetches_updates(self) -> bool:
        """With ``fetch_client`` (and the API keys), the daemon runs the client fetcher."""
        return self.fetcher is not None and self.reply_problem() is None

    async def fetch_updates(self, inbound: Inbound) -> None:
        """Fetch the queued clients with ``GET /clients/{id}`` and hand each to ``inbound``
        (see :mod:`rulekit_chatra.fetch`), until cancelled."""
        if self.fetcher is None:
            raise NotImplementedError("fetch_client is off")

        async def get_client(client_id: str) -> dict[str, Any]:
            return await self.api().get_client(client_id, timeout=FETCH_TIMEOUT)

        await self.fetcher.run(inbound, get_client)

    def conversation_key(self, data: Any) -> str | None:
        """Chatra keeps one continuous chat per visitor, so the conversation is the client id,
        read as the parser reads it (``" 42"`` and ``42`` are client ``42``)."""
        return client_key(data)

    # replies ---------------------------------------------------------------------------------
    def reply_problem(self) -> str | None:
        missing = [key for key in ("public_key", "secret_key") if not getattr(self.settings, key)]
        if missing:
            return f"channel {self.channel!r} needs {' and '.join(missing)} to send replies"
        return None

    def describe_reply(self, reply: Reply) -> str:
        sender = self.sender(reply)
        who = (
            sender.get("agentEmail")
            or (f"agent {sender['agentId']}" if "agentId" in sender else None)
            or "no agent (set default_agent or default_agent_id, or assign one first)"
        )
        text = fitted(reply.text)
        if not text.strip():
            return f"Chatra POST /messages/ to client {reply.client.id}: not sent, {_EMPTY}"
        cut = f" (truncated to {len(text)} characters)" if text != reply.text else ""
        return f"Chatra POST /messages/ to client {reply.client.id} as {who}{cut}: {text!r}"

    async def send_reply(self, reply: Reply, *, timeout: float) -> dict[str, Any]:
        if problem := self.reply_problem():
            raise PermanentActionError(problem)
        if not reply.client.id:
            raise PermanentActionError("the conversation has no Chatra client id to reply to")
        sender = self.sender(reply)
        if not sender:
            raise PermanentActionError(
                self.sender_problem(reply.conversation) or "no agent to send as"
            )
        text = fitted(reply.text)
        if not text.strip():
            # Chatra refuses it (400): said here, before a call, in words the admin can act on
            raise PermanentActionError(_EMPTY)
        body = {"clientId": reply.client.id, "text": text, **sender}
        body["receivedFrom"] = self.settings.received_from
        answer = await self.api().send_message(body, timeout=timeout)
        if text != reply.text:
            answer = {**answer, "truncated": True}
        return answer

    def sent_message_ids(self, answer: Any) -> list[str]:
        """The id of the message ``POST /messages/`` created (its answer is that message), as
        a webhook's message id is read: Chatra's echo of it is then rulekit's own even where
        it lacks ``receivedFrom`` (a transcript's copy of it, its fragment lost)."""
        found = identifier(answer.get("id")) if isinstance(answer, dict) else None
        return [found] if found else []

    def sender_problem(self, conversation: Conversation) -> str | None:
        if conversation.assignee or self.settings.default_agent_id or self.settings.default_agent:
            return None
        return (
            f"no agent to send as: the conversation has no assignee and channel "
            f"{self.channel!r} has no default sender (default_agent or default_agent_id)"
        )

    def sender(self, reply: Reply) -> dict[str, str]:
        """Who a reply is sent as: the agent who writes it (a reply from the console), else the
        conversation's assignee (by email, named as the directory names them), else the default
        sender (``default_agent_id``, or ``default_agent``'s email and name); empty when there
        is none. Chatra creates an agent it does not know by that email."""
        if reply.agent is not None and reply.agent.email:
            email = reply.agent.email
            return {"agentEmail": email, "agentName": reply.agent.name or email.split("@")[0]}
        assignee = reply.conversation.assignee
        if assignee:
            entry = self.directory.get(assignee)
            email = entry.email if entry else assignee
            name = (entry.name if entry else None) or email.split("@")[0]
            return {"agentEmail": email, "agentName": name}
        if self.settings.default_agent_id:
            return {"agentId": self.settings.default_agent_id}
        if self.settings.default_agent:
            default = self.settings.default_agent
            return {"agentEmail": default.email, "agentName": default.name}
        return {}

    # client data ---------------------------------------------------------------------------
    can_update_clients = True

    def update_problem(self) -> str | None:
        return self.reply_problem()

    def update_fields_problem(self, fields: Collection[str]) -> str | None:
        """The channel keeps of a client only what ``client_data`` takes: a change of another
        field would be dropped from the record by the client's next webhook."""
        left_out = sorted(set(fields) - set(self.settings.client_data))
        if not left_out:
            return None
        return (
            f"channel {self.channel!r} does not keep the client's {', '.join(left_out)} (its"
            " client_data leaves them out): the next webhook would drop the change"
        )

    async def update_client(
        self, client_id: str, changes: dict[str, str | None], *, timeout: float
    ) -> dict[str, Any]:
        """``PUT /clients/{id}`` with the changed keys (null clears one)."""
        if problem := self.update_problem():
            raise PermanentActionError(problem)
        return await self.api().update_client(client_id, dict(changes), timeout=timeout)

    def api(self) -> ChatraAPI:
        """The REST client for this channel's keys (check :meth:`reply_problem` first). Its
        HTTP connections are kept between the calls made in one event loop."""
        assert self.settings.public_key and self.settings.secret_key
        return ChatraAPI(
            self.settings.base_url,
            self.settings.public_key,
            self.settings.secret_key,
            session=self._session(),
        )

    def _session(self) -> aiohttp.ClientSession | None:
        return self._sessions.get()

    async def aclose(self) -> None:
        """Close the HTTP connections kept between calls."""
        await self._sessions.aclose()
