"""The channel's settings model."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rulekit.channels import ChannelSettings

from rulekit_chatra.settings import CLIENT_FIELDS, ChatraSettings


def test_defaults():
    settings = ChatraSettings()
    assert isinstance(settings, ChannelSettings)
    assert settings.public_key is None and settings.secret_key is None
    assert settings.base_url == "https://app.chatra.io/api"
    assert settings.received_from == "rulekit"
    assert settings.default_agent_id is None
    assert settings.client_data == list(CLIENT_FIELDS)
    assert set(CLIENT_FIELDS) == {
        "name", "email", "phone", "notes", "ip", "browser", "os", "language",
        "browser_language", "country", "city", "last_visit", "custom",
    }  # fmt: skip


def test_unknown_keys_are_errors():
    with pytest.raises(ValidationError) as caught:
        ChatraSettings.model_validate({"secret": "x"})
    assert caught.value.errors()[0]["type"] == "extra_forbidden"


def test_client_data_names_only_known_fields():
    assert ChatraSettings(client_data=["email", "city"]).client_data == ["email", "city"]
    with pytest.raises(ValidationError) as caught:
        ChatraSettings.model_validate({"client_data": ["email", "adress"]})
    assert "'browser_language'" in str(caught.value)  # the message lists what is allowed


def test_base_url_must_be_http_and_loses_its_trailing_slash():
    assert ChatraSettings(base_url="http://127.0.0.1:9/api/").base_url == "http://127.0.0.1:9/api"
    with pytest.raises(ValidationError):
        ChatraSettings(base_url="app.chatra.io/api")


def test_received_from_cannot_be_empty():
    # An empty tag would make every untagged agent message look like rulekit's own echo.
    with pytest.raises(ValidationError):
        ChatraSettings(received_from="")


def test_secrets_never_show():
    settings = ChatraSettings(public_key="pub", secret_key="topsecret", webhook_secret="hooksecret")
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "topsecret" not in shown
        assert "hooksecret" not in shown


def test_empty_keys_are_unset():
    # What ``${CHATRA_SECRET_KEY}`` gives when the variable is not set.
    settings = ChatraSettings(public_key="", secret_key=" ", default_agent_id="")
    assert (settings.public_key, settings.secret_key, settings.default_agent_id) == (None,) * 3


def test_a_default_sender_by_email_and_name_or_by_id_not_both():
    settings = ChatraSettings.model_validate(
        {"default_agent": {"email": " bot@shop.example ", "name": "Shop Bot"}}
    )
    assert settings.default_agent is not None
    assert (settings.default_agent.email, settings.default_agent.name) == (
        "bot@shop.example",
        "Shop Bot",
    )
    for wrong, message in (
        (
            {"default_agent": {"email": "bot@shop.example", "name": "B"}, "default_agent_id": "a1"},
            "not both",
        ),
        ({"default_agent": {"email": "bot", "name": "B"}}, "not an email"),
        ({"default_agent": {"email": "bot@shop.example", "name": " "}}, "must not be empty"),
        ({"default_agent": {"email": "bot@shop.example"}}, "name"),
    ):
        with pytest.raises(ValidationError, match=message):
            ChatraSettings.model_validate(wrong)
