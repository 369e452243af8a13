"""The config file: interpolation, secrets, validation with locations, the agent directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from scaffold import write

from rulekit.config import load_config
from rulekit.directory import AgentEntry, Directory
from rulekit.errors import ValidationErrors
from rulekit.plugins import load_plugins

TOKEN = "xoxb-SECRET-4f1c9a77d2"


@pytest.fixture(scope="module")
def plugins():
    return load_plugins()


def load(tmp_path: Path, text: str, plugins, environ: dict[str, str] | None = None):
    return load_config(write(tmp_path / "rulekit.yaml", text), plugins, environ or {})


def errors_of(tmp_path: Path, text: str, plugins, environ=None) -> list[str]:
    with pytest.raises(ValidationErrors) as caught:
        load(tmp_path, text, plugins, environ)
    return [str(e) for e in caught.value.errors]


def test_variables_and_defaults_are_interpolated(tmp_path: Path, plugins) -> None:
    config = load(
        tmp_path,
        """
        storage: ${STORE_URL}
        timezone: ${TZ_NAME:-Europe/Berlin}
        server: {host: "${HOST:-0.0.0.0}"}
        integrations:
          slack: {token: "${SLACK_BOT_TOKEN}"}
        """,
        plugins,
        {"STORE_URL": "sqlite:///x.db", "HOST": "10.0.0.1", "SLACK_BOT_TOKEN": TOKEN},
    )
    assert config.raw.storage == "sqlite:///x.db"
    assert config.raw.timezone == "Europe/Berlin"
    assert config.raw.server.host == "10.0.0.1"
    assert config.integrations["slack"].token.get_secret_value() == TOKEN


def test_unset_variable_without_default_is_empty(tmp_path: Path, plugins) -> None:
    config = load(tmp_path, "integrations: {slack: {token: '${NOPE_NOT_SET}'}}\n", plugins)
    token = config.integrations["slack"].token
    assert token is None or token.get_secret_value() == ""


def test_secrets_never_appear_in_repr_or_errors(tmp_path: Path, plugins) -> None:
    environ = {"SLACK_BOT_TOKEN": TOKEN}
    text = "integrations: {slack: {token: '${SLACK_BOT_TOKEN}'}}\n"
    config = load(tmp_path, text, plugins, environ)
    assert TOKEN not in repr(config.raw)
    assert TOKEN not in str(config.raw.model_dump())
    assert TOKEN not in repr(config)
    assert TOKEN not in str(config.integrations)
    assert TOKEN not in config.integrations["slack"].model_dump_json()
    # a secret in a field of the wrong type is not echoed back in the error
    messages = errors_of(
        tmp_path,
        "server: {port: '${SLACK_BOT_TOKEN}'}\nintegrations: {slack: {token: [1]}}\n",
        plugins,
        environ,
    )
    assert messages
    assert all(TOKEN not in m for m in messages)


def test_unknown_key_has_file_line_and_suggestion(tmp_path: Path, plugins) -> None:
    messages = errors_of(tmp_path, "rules: rules.d\ntimezon: UTC\n", plugins)
    assert len(messages) == 1
    assert "rulekit.yaml:2" in messages[0]
    assert "unknown field 'timezon'" in messages[0]
    assert "did you mean 'timezone'?" in messages[0]


def test_unknown_provider_and_integration_are_suggested(tmp_path: Path, plugins) -> None:
    messages = errors_of(
        tmp_path,
        """
        channels:
          online-chat: {provider: chatr}
        integrations:
          slak: {token: x}
        """,
        plugins,
    )
    joined = "\n".join(messages)
    assert "unknown provider 'chatr' (did you mean 'chatra'?)" in joined
    assert "rulekit.yaml:2: channels.online-chat.provider" in joined
    assert "unknown integration 'slak' (did you mean 'slack'?)" in joined
    assert "rulekit.yaml:4" in joined


def test_a_channel_name_that_would_share_ids_with_another_is_refused(
    tmp_path: Path, plugins
) -> None:
    """A channel's name begins its conversations' and events' ids: channels ``chat`` and
    ``chat:vip`` made ``chat:vip:1`` for conversation ``vip:1`` of the first and ``1`` of the
    second, sharing its timers and cooldowns."""
    messages = errors_of(
        tmp_path,
        """
        channels:
          chat: {provider: chatra, webhook_secret: s-0123456789abcdef}
          "chat:vip": {provider: chatra, webhook_secret: s-0123456789abcdef}
          "a/b": {provider: chatra, webhook_secret: s-0123456789abcdef}
          " spaced": {provider: chatra, webhook_secret: s-0123456789abcdef}
        """,
        plugins,
    )
    joined = "\n".join(messages)
    assert len(messages) == 3, joined
    assert "rulekit.yaml:3: channels.chat:vip" in joined and "letters, digits" in joined
    assert "rulekit.yaml:4" in joined and "rulekit.yaml:5" in joined


def test_provider_settings_are_validated_by_the_provider_model(tmp_path: Path, plugins) -> None:
    messages = errors_of(
        tmp_path, "channels:\n  online-chat:\n    provider: chatra\n    public_kye: x\n", plugins
    )
    assert messages == [
        f"{tmp_path / 'rulekit.yaml'}:4: channels.online-chat.public_kye: unknown field "
        "'public_kye' (did you mean 'public_key'?)"
    ]


def test_agent_in_unknown_group(tmp_path: Path, plugins) -> None:
    messages = errors_of(
        tmp_path,
        """
        groups: {support: {}}
        agents:
          - {email: a@x.io, groups: [suport]}
        """,
        plugins,
    )
    assert len(messages) == 1
    assert "rulekit.yaml:3" in messages[0]
    assert "unknown group 'suport' (did you mean 'support'?)" in messages[0]


def test_duplicate_agent_emails_differ_only_in_case(tmp_path: Path, plugins) -> None:
    messages = errors_of(
        tmp_path,
        """
        agents:
          - {email: Anna@Shop.example}
          - {email: anna@shop.EXAMPLE}
        """,
        plugins,
    )
    assert len(messages) == 1
    assert "rulekit.yaml:3" in messages[0]
    assert "listed twice" in messages[0]


def test_invalid_timezone(tmp_path: Path, plugins) -> None:
    messages = errors_of(tmp_path, "timezone: Europe/Atlantis\n", plugins)
    assert len(messages) == 1
    assert "rulekit.yaml:1" in messages[0]
    assert "unknown timezone 'Europe/Atlantis'" in messages[0]


def test_all_config_errors_are_reported_together(tmp_path: Path, plugins) -> None:
    messages = errors_of(
        tmp_path,
        """
        channels:
          a: {provider: nope}
        integrations:
          nope: {}
        agents:
          - {email: x@y.z, groups: [ghost]}
        """,
        plugins,
    )
    assert len(messages) == 3


def test_directory_lookup_is_case_insensitive() -> None:
    anna = AgentEntry(email="Anna@Shop.example", groups=["support"], channels=["online-chat"])
    directory = Directory([anna], ["support"])
    assert directory.get("anna@shop.EXAMPLE") is anna
    assert directory.get("ANNA@SHOP.EXAMPLE") is anna
    assert directory.get("bob@shop.example") is None
    assert directory.get(None) is None


def test_eligible_respects_channel_access_and_group() -> None:
    anna = AgentEntry(email="anna@x.io", groups=["support"], channels=["online-chat"])
    pavel = AgentEntry(email="pavel@x.io", groups=["support", "sales"], channels=["online-chat"])
    lena = AgentEntry(email="lena@x.io", groups=["sales"], channels=[])
    directory = Directory([anna, pavel, lena], ["support", "sales"])
    assert directory.eligible("online-chat") == [anna, pavel]
    assert directory.eligible("online-chat", "sales") == [pavel]
    assert directory.eligible("online-chat", "support") == [anna, pavel]
    # a channel nobody was granted gives nobody access
    assert directory.eligible("telegram-bot") == []
    assert directory.eligible("telegram-bot", "sales") == []


def test_default_config_offers_online_chat(plugins) -> None:
    config = load_config(None, plugins)
    assert "online-chat" in config.channels
    assert config.channels["online-chat"].provider == "chatra"
    assert config.directory.agents == []


def test_allowed_env_lists_only_allowed_names(tmp_path: Path, plugins) -> None:
    config = load(tmp_path, "env: [SUPPORT_CHAT]\n", plugins)
    env = config.allowed_env(
        {
            "SUPPORT_CHAT": "-100",
            "HOME": "/root",
            "SLACK_BOT_TOKEN": TOKEN,
            "RULEKIT_TEAM": "blue",
            "RULEKIT_CONFIG": "/etc/rulekit.yaml",
        }
    )
    assert env == {"SUPPORT_CHAT": "-100", "RULEKIT_TEAM": "blue"}


def test_config_that_is_not_a_mapping(tmp_path: Path, plugins) -> None:
    from rulekit.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load(tmp_path, "- a\n- b\n", plugins)
    assert "must be a mapping" in str(caught.value)
    assert "rulekit.yaml:1" in str(caught.value)


def test_a_console_token_hash_is_one_persons(tmp_path: Path, plugins) -> None:
    """Two agents (or an agent and the admin) with one token: whoever signs in with it would be
    taken for the first entry that matches it (the admin's when the admin has it)."""
    shared, other = "a" * 64, "B" * 64
    messages = errors_of(
        tmp_path,
        f"""
        console: {{admin_token_sha256: {shared}}}
        agents:
          - {{email: anna@shop.example, token_sha256: {other}}}
          - {{email: boris@shop.example, token_sha256: "{shared.upper()} "}}
          - {{email: carla@shop.example, token_sha256: {other.lower()}}}
        """,
        plugins,
    )
    assert len(messages) == 2
    assert "rulekit.yaml:4" in messages[0] and "rulekit.yaml:5" in messages[1]
    assert "boris@shop.example has the token of the admin" in messages[0]
    assert "carla@shop.example has the token of anna@shop.example" in messages[1]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("${SLACK_BOT_TOKEN", "'${SLACK_BOT_TOKEN'"),  # no closing brace
        ("${SLACK-BOT-TOKEN}", "'${SLACK-BOT-TOKEN}'"),  # not a variable's name
        ("${SLACK_BOT_TOKEN:?required}", "'${SLACK_BOT_TOKEN:…'"),  # another shell form
        ("${SLACK_BOT_TOKEN:-xoxb-default-secret", "'${SLACK_BOT_TOKEN:…'"),  # never the default
        ("${}", "'${}'"),
        ("prefix-${A:-${B}}", "'${B}'"),  # a default holding a reference
    ],
)
def test_a_reference_that_is_not_one_is_an_error_at_its_line(
    tmp_path: Path, plugins, value: str, shown: str
) -> None:
    """Kept as written, ``${SLACK_BOT_TOKEN`` would be sent as the token itself: the mistake
    is found when the file is read, at its line, without quoting what could be a secret."""
    found = errors_of(
        tmp_path,
        f"timezone: UTC\nintegrations:\n  slack:\n    token: '{value}'\n",
        plugins,
        {"SLACK_BOT_TOKEN": TOKEN, "A": "a", "B": "b"},
    )
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'rulekit.yaml'}:4: integrations.slack.token: {shown}")
    assert "is not a reference to an environment variable: write ${NAME}" in found[0]
    assert "xoxb-default-secret" not in found[0] and TOKEN not in found[0]
