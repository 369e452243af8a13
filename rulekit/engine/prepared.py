"""What the evaluation of one rule prepares once, on its first evaluation: the decider that
decides it from the values the index read, and, when nothing about it varies per event, its
planned actions."""

from __future__ import annotations

from typing import Any

from rulekit.engine.decide import Decider
from rulekit.engine.explain import leaves
from rulekit.engine.index import RuleIndex
from rulekit.rules.spec import Rule


class PreparedRule:
    """What the evaluation of one rule prepares once."""

    __slots__ = ("constant", "decider", "sources")

    def __init__(self) -> None:
        self.decider: Decider | None = None
        """Decides the rule from the values the index read (see :mod:`.decide`)."""
        self.sources: tuple[str, ...] = ()
        """The condition sources, in the order they are explained."""
        self.constant: list[tuple[str, Any, dict[str, Any] | None, dict[str, Any] | None]] | None
        self.constant = None
        """For a rule without cooldown or timer whose actions all have constant parameters
        and leave the conversation as it is: each action's name, parameters, parameters as
        JSON data and trace entry."""


def prepare(rule: Rule, index: RuleIndex) -> PreparedRule:
    """What the evaluation of ``rule`` can prepare once (on its first evaluation): ``index``
    is the rule index that selects it."""
    prepared = PreparedRule()
    if rule.condition is not None:
        prepared.decider = index.decider(rule)
        prepared.sources = tuple(leaf.source for leaf in leaves(rule.condition))
    if (
        not rule.cooldown
        and rule.timing is None
        and all(
            step.validated is not None and not step.action_class.changes_conversation
            for step in rule.steps
        )
    ):
        prepared.constant = [
            (step.action, step.validated, step.dumped(), step.entry(rule.name))
            for step in rule.steps
        ]
    return prepared
