"""The configuration file (``rulekit.yaml``): where rules live, storage, server, timezone,
channels, the agent directory (:mod:`rulekit.directory`), groups and integrations.

Secrets are never written into the file: values like ``${SLACK_BOT_TOKEN}`` are taken from the
environment when the file is read (``${NAME:-default}`` gives a default; see
:mod:`rulekit.interpolation`). Fields that hold secrets are ``SecretStr``: they print as
``**********`` everywhere.
"""

from __future__ import annotations

import ipaddress
import os
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from rulekit import sources, yamlsource
from rulekit.calendars import Calendar, CalendarSpec, compile_calendars
from rulekit.directory import AgentEntry, Directory, GroupEntry
from rulekit.errors import ConfigError, Location, did_you_mean
from rulekit.interpolation import (
    interpolate,
    malformed_references,
    padded_variables,
    unset_variables,
)
from rulekit.models import Duration, StrictModel, parse_duration
from rulekit.safetext import name_problem
from rulekit.validation import dotted, pydantic_errors

CONFIG_ENV = "RULEKIT_CONFIG"
MAX_CONFIG_BYTES = 1024 * 1024


class ServerSettings(StrictModel):
    """Where ``rulekit run`` listens, the limits of its HTTP server, and which proxies it
    trusts for ``X-Forwarded-For``/``X-Forwarded-Proto``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    max_body_bytes_in_flight: int = Field(
        default=64 * 1024 * 1024,
        gt=0,
        description="bytes of webhook bodies being read or handled at once, all connections "
        "together (503 with Retry-After above it, before the body is read)",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="bytes of a request's line and headers (431 above it)",
    )
    max_connections: int = Field(
        default=1000, ge=1, description="open client connections (kept below the open-files limit)"
    )
    header_timeout: float = Field(
        default=10.0, gt=0, description="seconds for a request's line and headers to arrive"
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="seconds for a request body to arrive"
    )
    keep_alive_timeout: float = Field(
        default=5.0, gt=0, description="seconds an idle connection is kept open between requests"
    )
    send_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds a client may take none of an answer being sent before it is closed",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of reverse proxies, besides loopback",
    )
    stall_after: Duration = Field(
        default_factory=lambda: parse_duration("60s"),
        description="/healthz fails when the processor or the dispatcher made no progress "
        "for this long while work waits",
    )

    @model_validator(mode="after")
    def _one_body_fits(self) -> ServerSettings:
        if self.max_body_bytes_in_flight < self.max_body_bytes:
            raise ValueError(
                f"max_body_bytes_in_flight ({self.max_body_bytes_in_flight}) is below "
                f"max_body_bytes ({self.max_body_bytes}): a body of the largest size accepted "
                "could never be read"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(str(entry).strip(), strict=False)))
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)"
                ) from None
        return networks


class ProcessingSettings(StrictModel):
    """How events are evaluated: in worker processes, each event within budgets."""

    workers: int = Field(default=1, ge=1, le=64, description="evaluation worker processes")
    event_cpu: Duration = Field(
        default_factory=lambda: parse_duration("2s"),
        description="CPU time one event's evaluation may take; over it, its item is set aside",
    )
    event_wall: Duration = Field(
        default_factory=lambda: parse_duration("10s"),
        description="time one event's evaluation may take; over it, the worker is replaced "
        "and the item set aside",
    )
    webhook_cpu: Duration = Field(
        default_factory=lambda: parse_duration("10s"),
        description="CPU time the events of one webhook (or those one action emitted) may take "
        "together; over it, its item is set aside",
    )
    webhook_wall: Duration = Field(
        default_factory=lambda: parse_duration("30s"),
        description="time the events of one webhook may take together (at most event_wall "
        "each); over it, the worker is replaced and the item set aside",
    )
    worker_memory_mb: int = Field(
        default=1024, ge=64, description="memory a worker may allocate beyond what the rules take"
    )


class DispatcherSettings(StrictModel):
    """How the daemon retries actions: exponential backoff with jitter, within a budget of
    attempts and time, after which a job is dead-lettered (visible, and retryable by hand)."""

    max_attempts: int = Field(default=8, ge=1)
    max_age: Duration = Field(default_factory=lambda: parse_duration("1d"))
    backoff_base: float = Field(default=1.0, gt=0, description="seconds before the first retry")
    backoff_max: float = Field(default=300.0, gt=0, description="the longest wait between retries")
    concurrency: int = Field(default=32, ge=1, description="jobs executing at once")


class ConsoleSettings(StrictModel):
    """The agents' console. Agents sign in with their own token (``agents[].token_sha256``);
    the admin token (its SHA-256, hex) sees everything."""

    enabled: bool = True
    admin_token_sha256: str | None = None
    max_streams: int = Field(
        default=256,
        ge=1,
        description="live streams (console pages) open at once, all agents together: well "
        "below server.max_connections, so that webhooks always find a connection",
    )


class RetentionSettings(StrictModel):
    """How long the daemon keeps what it recorded."""

    events: Duration = Field(default_factory=lambda: parse_duration("90d"))
    payloads: Duration = Field(default_factory=lambda: parse_duration("30d"))


class LoggingSettings(StrictModel):
    """Log format and level. Message texts and emails appear only with ``content: true``
    (whatever the level)."""

    format: Literal["text", "json"] = "text"
    level: Literal["debug", "info", "warning", "error"] = "info"
    content: bool = False


class PluginSettings(StrictModel):
    """Which plugins to leave out (by name, as ``rulekit plugins`` shows them)."""

    disable: list[str] = Field(default_factory=list)


MAX_TAG = 64
"""Characters a tag may have."""
MAX_FIELD_NAME = 64


def tag_name(tag: str) -> str:
    """``tag`` as tags are kept and compared: without spaces at its ends, in Unicode's composed
    form (NFC), so that ``café`` typed, written in a rule or coming from a client's value in
    decomposed form (``e`` and a combining accent) is one tag, not two that look the same."""
    return unicodedata.normalize("NFC", tag.strip())


def tag_problem(tag: str) -> str | None:
    """Why ``tag`` is not a tag name (None when it is): 1 to 64 characters, no spaces at either
    end, no control, bidi or invisible characters (:func:`rulekit.safetext.name_problem`)."""
    if not tag or tag != tag.strip():
        return f"tag {tag!r} is empty or has spaces at an end"
    if len(tag) > MAX_TAG:
        return f"tag {tag[:20]!r}... is longer than {MAX_TAG} characters"
    if problem := name_problem(tag):
        return f"tag {tag!r} {problem}"
    return None


def field_name_problem(name: str) -> str | None:
    """Why ``name`` is not a conversation field name (None when it is): a letter, then
    letters, digits or ``_``, at most 64 (so that ``conversation.fields.<name>`` reads it: the
    sandbox reads no name starting with ``_``)."""
    if (
        name.isascii()
        and name.isidentifier()
        and not name.startswith("_")
        and len(name) <= MAX_FIELD_NAME
    ):
        return None
    return (
        f"field name {name[:70]!r} is not a name (letters, digits and _, starting with a "
        f"letter, at most 64)"
    )


class RawConfig(StrictModel):
    """The file as written; channel and integration settings are validated by plugin models."""

    rules: str = "rules.d"
    storage: str = "sqlite:///rulekit.sqlite3"
    server: ServerSettings = Field(default_factory=ServerSettings)
    timezone: str = "UTC"
    calendars: dict[str, CalendarSpec] = Field(
        default_factory=dict, description="business-hours calendars, by name"
    )
    env: list[str] = Field(default_factory=list)
    plugins: PluginSettings = Field(default_factory=PluginSettings)
    # as written, secrets in plain text: never shown (the validated models hold SecretStr)
    channels: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False, exclude=True)
    agents: list[AgentEntry] = Field(default_factory=list)
    groups: dict[str, GroupEntry | None] | list[str] = Field(default_factory=dict)
    integrations: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False, exclude=True)
    dispatcher: DispatcherSettings = Field(default_factory=DispatcherSettings)
    processing: ProcessingSettings = Field(default_factory=ProcessingSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    tags: list[str] | None = Field(
        None, description="The conversation tags rules may set; free-form when left out."
    )
    fields: list[str] | None = Field(
        None, description="The conversation fields rules may set; free-form when left out."
    )

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for tag in value:
            if problem := tag_problem(tag):
                raise ValueError(problem)
        return list(dict.fromkeys(unicodedata.normalize("NFC", tag) for tag in value))

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if problem := field_name_problem(name):
                raise ValueError(problem)
        return list(dict.fromkeys(value))

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown timezone {value!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return value


@dataclass
class ChannelConfig:
    """A configured channel: its provider and the provider's validated settings."""

    name: str
    provider: str
    settings: BaseModel


@dataclass
class Config:
    """A loaded, validated configuration. ``Config.default()`` is what runs with no file."""

    raw: RawConfig = field(default_factory=RawConfig)
    path: Path | None = None
    channels: dict[str, ChannelConfig] = field(default_factory=dict)
    integrations: dict[str, BaseModel] = field(default_factory=dict)
    directory: Directory = field(default_factory=lambda: Directory([], []))
    unset_variables: list[str] = field(default_factory=list)
    """Where the file names a ``${VAR}`` (without a ``:-default``) that is unset or empty:
    ``file:line: path: ${VAR} is unset or empty`` (values that will be missing at run time),
    and one whose value begins or ends with whitespace (values that will be wrong)."""

    @property
    def base_dir(self) -> Path:
        """The directory relative paths of the file are read from: the one the file was named
        in, symlinks not followed (a Kubernetes ConfigMap's ``rulekit.yaml`` is a link into a
        directory that the next update deletes; ``../rules.d`` means beside the directory the
        admin named)."""
        return self.path.parent if self.path else Path.cwd()

    @property
    def rules_path(self) -> Path:
        return Path(os.path.abspath(self.base_dir / self.raw.rules))

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.raw.timezone)

    @cached_property
    def calendars(self) -> dict[str, Calendar]:
        """The business-hours calendars, compiled (zone: the calendar's, else the config's)."""
        return compile_calendars(self.raw.calendars, self.raw.timezone)

    def allowed_env(self, environ: dict[str, str] | None = None) -> dict[str, str]:
        """The environment variables rules may read: those listed in ``env`` and ``RULEKIT_*``."""
        environ = dict(os.environ) if environ is None else environ
        allowed = set(self.raw.env)
        return {
            key: value
            for key, value in environ.items()
            if key in allowed or (key.startswith("RULEKIT_") and key != CONFIG_ENV)
        }


def find_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to use: ``--config``, else ``RULEKIT_CONFIG``, else none."""
    chosen = explicit or os.environ.get(CONFIG_ENV)
    return Path(chosen) if chosen else None


MAX_CHANNEL_NAME = 64
_CHANNEL_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def channel_name_problem(channel: str) -> str | None:
    """Why ``channel`` cannot name a channel, or None. A channel's name begins the ids of its
    conversations and events (``online-chat:client1``) and is part of its webhook URL: a name
    holding ``:`` made channels ``a`` and ``a:b`` share ids (``a:b:1``), so their timers and
    cooldowns; ``/`` ends an id's own events' segments."""
    if not channel or len(channel) > MAX_CHANNEL_NAME:
        return f"a channel's name is 1 to {MAX_CHANNEL_NAME} characters"
    if not set(channel) <= _CHANNEL_CHARACTERS or not channel[0].isalnum():
        return (
            f"channel name {channel[:MAX_CHANNEL_NAME]!r}: letters, digits, '.', '_' and '-', "
            "beginning with a letter or digit"
        )
    return None


def load_config(
    path: str | os.PathLike[str] | None,
    plugins: Any,
    environ: dict[str, str] | None = None,
) -> Config:
    """Read and validate a config file against the loaded plugins' models.

    ``path=None`` gives the default config: every installed provider offers its default channel.
    Raises :class:`rulekit.errors.ValidationErrors` listing every problem found.
    """
    from rulekit.errors import ValidationErrors

    environ = dict(os.environ) if environ is None else environ
    if path is None:
        return _default_config(plugins)
    path = Path(path)
    name = str(path)
    try:
        data = sources.read_bytes(path, MAX_CONFIG_BYTES)
    except sources.FileTooLarge:
        raise ConfigError(
            f"the config file is over {MAX_CONFIG_BYTES} bytes", Location(name)
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", Location(name)) from None
    try:
        tree = yamlsource.load(data)
    except yamlsource.YamlSyntaxError as exc:
        raise ConfigError(f"invalid YAML: {exc.message}", Location(name, exc.line)) from None
    if tree is None:
        tree = yamlsource.LineDict()
    if not isinstance(tree, dict):
        raise ConfigError("the config file must be a mapping", Location(name, 1))
    malformed = [
        _at(
            name,
            tree,
            where,
            f"{text!r} is not a reference to an environment variable: write ${{NAME}} or "
            "${NAME:-default} (a name of letters, digits and _, and the closing brace)",
        )
        for where, text in malformed_references(tree)
    ]
    if malformed:
        raise ValidationErrors(malformed)
    unset = [
        str(_at(name, tree, where, f"${{{variable}}} is unset or empty"))
        for where, variable in unset_variables(tree, environ)
    ]
    unset += [
        str(
            _at(
                name,
                tree,
                where,
                f"${{{variable}}} begins or ends with whitespace or a line break, which the "
                "value keeps (a file's last line break?)",
            )
        )
        for where, variable in padded_variables(tree, environ)
    ]
    tree = interpolate(tree, environ)

    errors: list[ConfigError] = []
    try:
        raw = RawConfig.model_validate(tree)
    except ValidationError as exc:
        for loc, message in pydantic_errors(exc, tree, RawConfig):
            errors.append(ConfigError(message, Location(name, loc[0], loc[1])))
        raise ValidationErrors(errors) from None

    config = Config(raw=raw, path=Path(os.path.abspath(path)), unset_variables=unset)
    groups = list(raw.groups)
    limits = (
        {
            name: entry.max_open
            for name, entry in raw.groups.items()
            if entry and entry.max_open is not None
        }
        if isinstance(raw.groups, dict)
        else {}
    )
    config.directory = Directory(raw.agents, groups, limits)

    for channel, settings in raw.channels.items():
        where = ("channels", channel)
        problem = channel_name_problem(channel)
        if problem is not None:
            errors.append(_at(name, tree, where, problem))
            continue
        provider_name = settings.get("provider") if isinstance(settings, dict) else None
        if not provider_name:
            errors.append(_at(name, tree, where, "a channel needs a provider"))
            continue
        if provider_name not in plugins.providers:
            hint = did_you_mean(provider_name, plugins.providers.names())
            installed = ", ".join(plugins.providers.names()) or "none"
            errors.append(
                _at(
                    name,
                    tree,
                    (*where, "provider"),
                    f"unknown provider {provider_name!r}{hint}; installed: {installed}",
                )
            )
            continue
        model = plugins.providers[provider_name].Settings
        body = {k: v for k, v in settings.items() if k != "provider"}
        try:
            config.channels[channel] = ChannelConfig(
                channel, provider_name, model.model_validate(body)
            )
        except ValidationError as exc:
            for loc, message in pydantic_errors(exc, tree, model, prefix=where):
                errors.append(ConfigError(message, Location(name, loc[0], loc[1])))

    integration_models = _integration_models(plugins)
    for integration, settings in raw.integrations.items():
        where = ("integrations", integration)
        if integration not in integration_models:
            hint = did_you_mean(integration, integration_models)
            errors.append(_at(name, tree, where, f"unknown integration {integration!r}{hint}"))
            continue
        model = integration_models[integration]
        try:
            config.integrations[integration] = model.model_validate(settings or {})
        except ValidationError as exc:
            for loc, message in pydantic_errors(exc, tree, model, prefix=where):
                errors.append(ConfigError(message, Location(name, loc[0], loc[1])))

    for index, agent in enumerate(raw.agents):
        for group in agent.groups:
            if group not in groups:
                errors.append(
                    _at(
                        name,
                        tree,
                        ("agents", index, "groups"),
                        f"agent {agent.email} is in unknown group {group!r}"
                        f"{did_you_mean(group, groups)}",
                    )
                )
    seen: dict[str, int] = {}
    for index, agent in enumerate(raw.agents):
        key = agent.email.lower()
        if key in seen:
            errors.append(
                _at(name, tree, ("agents", index, "email"), f"agent {agent.email} is listed twice")
            )
        seen[key] = index
    errors += _shared_tokens(raw, name, tree)
    if errors:
        raise ValidationErrors(errors)
    return config


def _shared_tokens(raw: RawConfig, name: str, tree: Any) -> list[ConfigError]:
    """Console tokens held by two people: whoever signs in with one would be taken for the
    first entry holding it (the admin, when the admin does), and act as them. (A hash that is
    no SHA-256 opens nothing: the console reports it.)"""
    holders: dict[str, str] = {}
    admin = (raw.console.admin_token_sha256 or "").strip().lower()
    if len(admin) == 64:
        holders[admin] = "the admin"
    errors = []
    for index, agent in enumerate(raw.agents):
        digest = (agent.token_sha256 or "").strip().lower()
        if len(digest) != 64:
            continue
        if digest in holders:
            message = (
                f"agent {agent.email} has the token of {holders[digest]}: "
                "each person needs their own token"
            )
            errors.append(_at(name, tree, ("agents", index, "token_sha256"), message))
            continue
        holders[digest] = agent.email
    return errors


def _default_config(plugins: Any) -> Config:
    """Every installed provider's default channel, with its default settings. A provider whose
    settings need values (a token) offers none: only a config can give them. Two providers
    offering one channel name are an error: which of them would serve it is the config's to
    say, not their names' order."""
    from rulekit.errors import PluginError

    config = Config()
    offered: dict[str, Any] = {}
    for provider_name in plugins.providers.names():
        entry = plugins.providers.entries[provider_name]
        channel = entry.value.default_channel
        if not channel:
            continue
        first = offered.get(channel)
        if first is not None:
            raise PluginError(
                f"providers {first.name!r} (plugin {first.plugin!r}) and {provider_name!r} "
                f"(plugin {entry.plugin!r}) both offer the channel {channel!r}: name its "
                "provider in a config, or disable one of the plugins"
            )
        offered[channel] = entry
        try:
            settings = entry.value.Settings.model_validate({})
        except ValidationError:
            continue
        config.channels[channel] = ChannelConfig(channel, provider_name, settings)
    return config


def _integration_models(plugins: Any) -> dict[str, type[BaseModel]]:
    models: dict[str, type[BaseModel]] = {}
    for action_name in plugins.actions.names():
        action = plugins.actions[action_name]
        if action.integration and action.Integration is not None:
            models.setdefault(action.integration, action.Integration)
    return models


def _at(file: str, tree: Any, path: tuple[Any, ...], message: str) -> ConfigError:
    return ConfigError(message, Location(file, yamlsource.line_of(tree, path), dotted(path)))
