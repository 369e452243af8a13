"""What the rule index reads of each rule's conditions, taken rule by rule as the rules load.

The index files a rule under one of its indexable must-hold conditions
(:func:`~rulekit.engine.discriminators.discriminators_of`) and decides it from the values it
read when all of its conditions are such tests (:mod:`.decide`); both are found in the rule's
expression trees. Those trees are several times the size of what is found in them, and kept
until the end of a load they leave the memory they are freed from scattered among the
compiled rules, where the process cannot give it back. :meth:`Engine.from_path
<rulekit.engine.engine.Engine>` has each rule analysed as soon as it is compiled, so that its
trees go at once and the next rules reuse their memory.
"""

from __future__ import annotations

from collections.abc import Iterable

from jinja2 import nodes

from rulekit.engine.decide import Decidable, decidable
from rulekit.engine.discriminators import (
    Discriminator,
    Option,
    discriminators_of,
    find_discriminator,
)
from rulekit.expr.codegen import Program
from rulekit.rules.spec import Rule


class RuleAnalysis:
    """Each rule's indexable conditions and, for rules the index's values decide, their
    :class:`~rulekit.engine.decide.Decidable` form."""

    def __init__(self, program: Program) -> None:
        self.program = program
        self.options: dict[str, tuple[Option, ...]] = {}
        """Each rule's indexable must-hold conditions, by rule name."""
        self.decidable: dict[str, Decidable] = {}
        """The rules the index's values decide, by name."""
        self._key_sets: dict[frozenset[str], frozenset[str]] = {}

    @classmethod
    def of(cls, rules: Iterable[Rule], program: Program) -> RuleAnalysis:
        """The analysis of ``rules``, their expression trees still there."""
        analysis = cls(program)
        for rule in rules:
            analysis.add(rule)
        return analysis

    def add(self, rule: Rule) -> None:
        """Analyse ``rule`` (its expression trees are still there)."""
        program = self.program
        found: dict[int, Discriminator | None] = {}  # by node, alive while this rule is

        def discriminator(node: nodes.Node) -> Discriminator | None:
            # a rule's conditions are nodes of its conjuncts: each is looked at once
            if id(node) not in found:
                found[id(node)] = find_discriminator(node, program)
            return found[id(node)]

        self.options[rule.name] = tuple(discriminators_of(rule, program, discriminator))
        if (decides := decidable(rule.condition, program, discriminator)) is not None:
            # rules of a large set read the same few fields: one set of them each time
            decides.keys = self._key_sets.setdefault(decides.keys, decides.keys)
            self.decidable[rule.name] = decides
