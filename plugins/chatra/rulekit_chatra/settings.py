"""The Chatra channel's settings: what an admin writes under ``channels: {online-chat: ...}``."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator
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


class ChatraSettings(ChannelSettings):
    """Settings of a channel served by the ``chatra`` provider.

    The API keys are in Chatra's dashboard (Settings → Preferences → API keys); they are needed
    only to send replies. ``received_from`` tags rulekit's own replies so that their echoes in
    later webhooks are recognised and dropped. ``default_agent_id`` is the Chatra agent replies
    are sent as when the conversation has no assignee. ``client_data`` lists which client fields
    are taken from Chatra (all by default); leave out what your privacy policy does not allow.
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

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")
