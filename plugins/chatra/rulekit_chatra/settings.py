"""The Chatra channel's settings: what an admin writes under ``channels: {online-chat: ...}``."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from rulekit.channels import ChannelSettings

ClientField = Literal[
    "name",
    "email",
    "phone",
    "notes",
    "ip",
    "browser",
    "os",
    "language",
    "browser_language",
    "country",
    "city",
    "last_visit",
    "custom",
]
"""The client fields Chatra can supply (names of :class:`rulekit.event.Client` fields)."""

CLIENT_FIELDS: tuple[ClientField, ...] = get_args(ClientField)

DEFAULT_BASE_URL = "https://app.chatra.io/api"


class DefaultAgent(BaseModel):
    """Who replies are sent as when the conversation has no assignee, by email and name (sent
    as ``agentEmail`` and ``agentName``: Chatra makes an agent of that email if it has none)."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(min_length=3, description="The sender's email (e.g. bot@shop.example).")
    name: str = Field(min_length=1, description="The name the visitor sees.")

    @field_validator("email", "name")
    @classmethod
    def _stripped(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("must not be empty")
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if "@" not in value or value.startswith("@") or value.endswith("@"):
            raise ValueError(f"{value!r} is not an email address")
        return value


class ChatraSettings(ChannelSettings):
    """Settings of a channel served by the ``chatra`` provider.

    The API keys are in Chatra's dashboard (Settings → Preferences → API keys); they are needed
    only to send replies. ``received_from`` tags rulekit's own replies so that their echoes in
    later webhooks are recognised and dropped. Replies are sent as the conversation's assignee;
    with none, as the *default sender*: ``default_agent_id`` (an existing Chatra agent's id) or
    ``default_agent`` (an email and a name), not both. ``client_data`` lists which client fields
    are taken from Chatra (all by default); leave out what your privacy policy does not allow.
    ``fetch_client`` asks Chatra's API for what a webhook left out of them (see
    :mod:`rulekit_chatra.fetch`).
    """

    public_key: str | None = Field(None, description="Chatra API public key (the ChatraID).")
    secret_key: SecretStr | None = Field(None, description="Chatra API secret key.")
    base_url: str = Field(DEFAULT_BASE_URL, description="Chatra REST API base URL.")
    received_from: str = Field(
        "rulekit", min_length=1, description="Tag set on replies; messages carrying it are echoes."
    )
    default_agent_id: str | None = Field(
        None, description="Chatra agent id replies are sent as when no agent is assigned."
    )
    default_agent: DefaultAgent | None = Field(
        None,
        description="Email and name replies are sent as when no agent is assigned "
        "(instead of default_agent_id).",
    )
    fetch_client: bool = Field(
        False,
        description="Fetch the client's data with GET /clients/{id} when a webhook lacks it "
        "(needs the API keys).",
    )
    client_data: list[ClientField] = Field(
        default_factory=lambda: list(CLIENT_FIELDS),
        description="Which client fields to take from Chatra.",
    )

    @field_validator("public_key", "secret_key", "default_agent_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ``${CHATRA_SECRET_KEY}`` of an unset variable reads as "": that is "not configured".
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("received_from")
    @classmethod
    def _tag(cls, value: str) -> str:
        # The echo's tag is read trimmed (as every text of a webhook): a tag sent with spaces
        # around it (" rulekit", a value from a file ending in a newline) would never match
        # its echo, and every reply would come back as an agent's, firing rules again.
        value = value.strip()
        if not value:
            raise ValueError("must not be blank: it tells rulekit's own replies apart")
        return value

    @model_validator(mode="after")
    def _one_default_sender(self) -> ChatraSettings:
        if self.default_agent_id and self.default_agent:
            raise ValueError("set default_agent_id or default_agent, not both")
        return self

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")
