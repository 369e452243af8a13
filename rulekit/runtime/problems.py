"""What will fail at run time with this config: the one list ``rulekit run --strict`` refuses to
start on and ``rulekit check --strict`` reports (so the two agree by construction).

* the rules' load-time warnings: an action's service not configured (an empty token), a risky
  setting (a webhook over plain ``http://``), a rule that can never fire, an ``assign`` whose
  group has no agent with access to the channel;
* a channel that cannot reply although a rule replies through it (no Chatra API keys);
* a channel with no default sender although a rule replies through it without an earlier
  ``assign`` in the rule: a reply in a conversation nobody is assigned to has no agent to send
  as;
* a channel without a ``webhook_secret``: every webhook to it is refused;
* a ``${VAR}`` of the config that is unset or empty (and has no ``:-default``);
* a channel or an integration whose ``base_url`` is plain ``http://`` to another machine: its
  credentials and the clients' messages would travel unencrypted.

Per event, ``rulekit test`` reports the same through each planned call's
:meth:`~rulekit.actions.base.Action.would_fail`.
"""

from __future__ import annotations

from typing import Any

from rulekit.channels.base import Provider
from rulekit.config import Config
from rulekit.engine.engine import Engine
from rulekit.event import Conversation
from rulekit.hosts import plain_http_host
from rulekit.rules.spec import Rule


def run_problems(engine: Engine, providers: dict[str, Provider]) -> list[str]:
    """Every problem of this config and these rules that a call or a webhook will run into,
    in a stable order (each once)."""
    problems = [str(warning) for warning in engine.ruleset.warnings]
    problems.extend(engine.config.unset_variables)
    problems.extend(_plain_http(engine.config))
    for channel in providers:
        settings = engine.config.channels[channel].settings
        secret = getattr(settings, "webhook_secret", None)
        if secret is None or not secret.get_secret_value():
            problems.append(
                f"channel {channel!r} has no webhook_secret: every webhook to it is refused (404)"
            )
    replying = [
        (rule, step.action, index)
        for rule in engine.rules
        for index, step in enumerate(rule.steps)
        if step.action_class.replies_through_channel
    ]
    for action in sorted({action for _, action, _ in replying}):
        for provider in providers.values():
            problem = provider.reply_problem()
            if problem and provider.can_reply:
                problems.append(f"{action}: {problem}")
    for rule, action, index in replying:
        if _assigns_before(rule, index):
            continue
        for channel, provider in providers.items():
            if rule.channels is not None and channel not in rule.channels:
                continue
            if provider.reply_problem() is not None:
                continue  # said above: it cannot reply at all
            problem = provider.sender_problem(Conversation())
            if problem:
                problems.append(
                    f"{rule.location}: rule {rule.name!r}: {action}: {problem} "
                    f"(and no assign before it in the rule)"
                )
    return list(dict.fromkeys(problems))


def _assigns_before(rule: Rule, index: int) -> bool:
    """Whether a step before ``index`` of ``rule`` sets the conversation's assignee."""
    return any("assignee" in step.action_class.changes for step in rule.steps[:index])


def _plain_http(config: Config) -> list[str]:
    """The services a channel or an integration calls over plain ``http://`` on another
    machine (its ``base_url``): their tokens and the messages sent would travel unencrypted."""
    places: list[tuple[str, Any]] = [
        (f"channels.{name}", channel.settings) for name, channel in config.channels.items()
    ]
    places += [(f"integrations.{name}", settings) for name, settings in config.integrations.items()]
    found = []
    for where, settings in places:
        url = getattr(settings, "base_url", None)
        host = plain_http_host(url) if isinstance(url, str) else None
        if host is not None:
            found.append(
                f"{where}.base_url is plain http:// to {host}: its credentials and the messages "
                "sent travel unencrypted; use https://"
            )
    return found
