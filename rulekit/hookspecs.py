"""The hooks a rulekit plugin may implement.

Plugins write ``from rulekit import hookimpl`` and implement any of the functions below, under
exactly these names (a misspelled ``rulekit_*`` hook is an error when plugins load). Built-in
channels and actions are registered through these same hooks.

Registration hooks receive a registry bound to the calling plugin, so that a duplicate name is an
error naming both plugins.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from rulekit.registry import ActionRegistry, ProviderRegistry, TemplateRegistry

PROJECT = "rulekit"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def rulekit_register_providers(register: ProviderRegistry) -> None:
    """Register providers: plugins that speak to a service and supply channels.

    Called once when plugins load. Call ``register.add(ProviderClass)`` for each provider; the
    class (a :class:`rulekit.channels.Provider`) names itself (``name``), its default channel
    (``default_channel``) and the model of its per-channel settings (``Settings``).
    Returns nothing.
    """


@hookspec
def rulekit_register_actions(register: ActionRegistry) -> None:
    """Register actions: the things a rule's ``do:`` list can name.

    Called once when plugins load. Call ``register.add(ActionClass)`` for each action; the class
    (a :class:`rulekit.actions.Action`) names itself (``name``) and declares its parameter model
    (``Params``) and, when it talks to an outside service, the integration it needs
    (``integration`` and its settings model ``Integration``). Returns nothing.
    """


@hookspec
def rulekit_template_environment(register: TemplateRegistry) -> None:
    """Extend the language of conditions and templates.

    Called once when plugins load. Call ``register.filter(name, function)``,
    ``register.test(name, function)`` or ``register.global_(name, value)``. Functions run inside
    the sandbox on event data: they must be pure, fast, and must not return objects that expose
    more than data. Returns nothing.
    """


@hookspec
def rulekit_register_commands(cli: click.Group) -> None:
    """Add commands to the ``rulekit`` command line.

    Called when the CLI starts, with the top-level click group; call ``cli.add_command(...)``.
    Keep heavy imports inside the command's function so ``rulekit --help`` stays fast.
    Returns nothing.
    """
