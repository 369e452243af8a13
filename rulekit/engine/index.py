"""Finding candidate rules without looping over all of them.

Rules are bucketed by (channel, event). Inside a bucket, each rule may have a *discriminator*:
one condition that must hold for the rule to match and that has an indexable shape —
``path == 'x'``, ``path in ['x', 'y']``, ``path.startswith('x')``, ``path.endswith('x')``,
``'x' in path`` (``path`` being an event field, optionally through ``lower``/``upper``/``trim``).
Rules sharing a path share one lookup: the field is read once per event, then a dict lookup
(equality, membership), a few slices (prefixes, suffixes) or one pass over the text for all the
distinct needles (substrings, :mod:`.needles`) find the rules whose discriminator holds. Only
those, plus rules without a discriminator, are evaluated. The index is only a filter: a rule it
lets through is evaluated in full, or decided from the values the index read when all of its
conditions are such tests (:mod:`.decide`).

A discriminator is chosen per bucket by selectivity (:func:`choose_by_selectivity`); a rule
whose only must-hold condition is an ``any`` is filed under one test per branch. A rule that is
one such test, or an ``any`` of them, is decided by the tests the index found to hold, when the
fields read are of plain types: no decider runs for it. In a bucket of only such rules the index
files *codes*, not rules (:meth:`Bucket.select_codes`): one small number per rule and test,
which says both the candidate and its decision.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from operator import attrgetter, floordiv
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import re2

from rulekit.engine.decide import Decider
from rulekit.engine.discriminators import (
    AnyKey,
    Discriminator,
    Option,
    choose_by_selectivity,
    option_parts,
)
from rulekit.engine.explain import decision_code
from rulekit.engine.needles import NeedleSets
from rulekit.expr.codegen import Program
from rulekit.rules.spec import AnyOf, Leaf, Rule

if TYPE_CHECKING:
    from rulekit.engine.analysis import RuleAnalysis

MAX_CACHED_BUCKETS = 4096
MIN_NEEDLE_SET = 8
"""From this many distinct substrings of one field, they are searched for together in one
pass over the text (see :mod:`.needles`), not one by one."""


Entry = TypeVar("Entry")


@dataclass
class KeyIndex(Generic[Entry]):
    """Rules discriminated on one field path: each filed as an entry, the rule itself or, in a
    coded bucket, its code (see :meth:`Bucket.select_codes`)."""

    getter: Callable[..., Any] | None = None
    code: str = ""
    """The field path as code: its value's key in the values read for an event."""
    rules: list[Entry] = field(default_factory=list)
    """Every entry filed on this path (candidates all when the path cannot be read)."""
    eq: dict[Any, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    prefixes: dict[int, dict[str, list[Entry]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    suffixes: dict[int, dict[str, list[Entry]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )
    contains: dict[str, list[Entry]] = field(default_factory=lambda: defaultdict(list))
    texts_only = False
    """Whether a rule tests the field as text (a prefix, suffix or substring)."""

    def add(self, entry: Entry, d: Discriminator) -> None:
        """File ``entry`` (a rule, or its code for the branch ``d`` is of) under ``d``."""
        self.rules.append(entry)
        for value in d.values:
            if d.kind == "eq":
                self.eq[value].append(entry)
            elif d.kind == "prefix":
                self.prefixes[len(value)][value].append(entry)
            elif d.kind == "suffix":
                self.suffixes[len(value)][value].append(entry)
            else:
                self.contains[value].append(entry)

    def freeze(self) -> None:
        self.eq = dict(self.eq)
        self.prefixes = {n: dict(m) for n, m in self.prefixes.items()}
        self.suffixes = {n: dict(m) for n, m in self.suffixes.items()}
        self.contains = dict(self.contains)
        self.texts_only = bool(self.prefixes or self.suffixes or self.contains)
        self._prefix_items = list(self.prefixes.items())
        self._suffix_items = list(self.suffixes.items())
        self._contains_items = list(self.contains.items())
        self._needles: NeedleSets | None = None
        if len(self._contains_items) >= MIN_NEEDLE_SET:
            try:
                self._needles = NeedleSets([needle for needle, _ in self._contains_items])
            except (UnicodeEncodeError, re2.error):  # a needle RE2 cannot take: one by one
                self._needles = None

    def matching(self, value: Any, out: list[Entry]) -> None:
        """Append the entries whose discriminator holds for ``value``."""
        if self.eq:
            try:
                found = self.eq.get(value)
            except TypeError:  # unhashable: equal to no constant
                found = None
            if found:
                out.extend(found)
        if isinstance(value, str):
            for length, table in self._prefix_items:
                found = table.get(value[:length])
                if found:
                    out.extend(found)
            for length, table in self._suffix_items:
                found = table.get(value[-length:])
                if found:
                    out.extend(found)
        if self._contains_items and value is not None:
            if self._needles is not None and isinstance(value, str):
                try:
                    indexes = self._needles.found(value)
                except UnicodeEncodeError:  # not valid Unicode: one by one below
                    pass
                else:
                    items = self._contains_items
                    for index in indexes:
                        out.extend(items[index][1])
                    return
            for needle, entries in self._contains_items:
                try:
                    if needle in value:
                        out.extend(entries)
                except TypeError:
                    return


@dataclass
class Bucket:
    """The rules of one (channel, event)."""

    rules: list[Rule]
    always: list[Rule]
    keys: list[KeyIndex[Any]]
    chosen: dict[str, Option] = field(default_factory=dict)
    """Each indexed rule's discriminator (by name), chosen for this bucket's rules."""
    stride: int = 0
    """In a coded bucket (see :meth:`select_codes`), the codes each rule has (its tests the
    index files it under); 0 in a bucket whose keys file rules."""
    decisions: list[int] = field(default_factory=list)
    """In a coded bucket, each code's decision (:func:`hit_decisions`)."""
    prepared: Any = None
    """What the evaluation prepares for this bucket's codes (the index never reads it)."""

    def __post_init__(self) -> None:
        stride = self.stride
        self._rule_of_code = [rule for rule in self.rules for _ in range(stride)]

    def candidates(self, e: Any, now: Any, env: Any) -> list[Rule]:
        """The rules worth evaluating for this event, in rule order."""
        return self.select(e, now, env)[0]

    def select(self, e: Any, now: Any, env: Any) -> tuple[list[Rule], dict[str, Any]]:
        """The :meth:`candidates`, and the value of each field read (by its code; a field
        that could not be read is missing) for the rules' deciders (:mod:`.decide`)."""
        values: dict[str, Any]
        if self.stride:
            codes, values, _ = self.select_codes(e, now, env)
            return self.rules_of(codes), values
        values = {}
        if not self.keys:
            return self.always, values
        found = list(self.always)
        for key in self.keys:
            try:
                value = key.getter(e, now, env)  # type: ignore[misc]
            except Exception:
                # the rules' own conditions fail the same way: evaluated, they say so
                found.extend(key.rules)
                continue
            values[key.code] = value
            if key.rules:
                key.matching(value, found)
        if len(found) > len(self.always):
            found = sorted(set(found), key=_position)
        return found, values

    def select_codes(self, e: Any, now: Any, env: Any) -> tuple[list[int], dict[str, Any], bool]:
        """In a coded bucket: the codes of the candidates, in rule order, the values read (as
        :meth:`select`), and whether the codes decide the candidates.

        Every rule of a coded bucket is decided by the tests the index found to hold (see
        :func:`hit_decisions`): the first of them in the rule's order decides it. The keys file
        each rule under ``number * stride + branch`` (``number``: its place among the bucket's
        :attr:`rules`) for its ``branch``-th test, so the
        candidates are the codes found (the lowest for a rule more than one test of which
        holds), and :attr:`decisions` says each one's decision. They decide when every field
        was read and is of a type whose tests are the index's own lookups and never raise
        (:data:`_PLAIN_TYPES`; text also for prefixes, suffixes and substrings)."""
        values: dict[str, Any] = {}
        codes: list[int] = []
        plain = True  # every field read, each of a type whose tests do not raise
        for key in self.keys:
            try:
                value = key.getter(e, now, env)  # type: ignore[misc]
            except Exception:
                codes.extend(key.rules)  # evaluated in full, they say what went wrong
                plain = False
                continue
            values[key.code] = value
            if type(value) is not str:
                plain = plain and not key.texts_only and type(value) in _PLAIN_TYPES
            if key.rules:
                key.matching(value, codes)
        if len(codes) > 1:
            if self.stride == 1:
                codes = sorted(set(codes))
            else:  # a rule's lowest code is its first test that holds: it decides
                codes.sort(reverse=True)
                lowest = dict(zip(map(floordiv, codes, repeat(self.stride)), codes, strict=True))
                codes = list(reversed(lowest.values()))
        return codes, values, plain

    def rules_of(self, codes: list[int]) -> list[Rule]:
        """The rules of ``codes`` (see :meth:`select_codes`)."""
        return list(map(self._rule_of_code.__getitem__, codes))


_position = attrgetter("position")
_PLAIN_TYPES = frozenset({str, int, float, bool, type(None)})
"""The types of field values whose equality and membership tests are the index's own
lookups, and never raise (text also for prefixes, suffixes and substrings)."""


def hit_decisions(rule: Rule, option: Option) -> list[int] | None:
    """The decision of ``rule`` filed under ``option`` when each of its tests is the first to
    hold, or None when those tests do not decide it.

    A rule whose condition is one test, or an ``any`` of tests (each an indexable condition of
    a field), is filed under each of them: the index's lookups are those tests, so when every
    field was read and is of a plain type (:data:`_PLAIN_TYPES`) the tests that hold are the
    ones it found, and the first of them in the rule's order decides the rule: the earlier
    ones false, the later ones not evaluated. The decision is the number the rule's decider
    returns (:func:`~rulekit.engine.explain.decision_code`)."""
    condition = rule.condition
    if isinstance(condition, Leaf) and isinstance(option, Discriminator):
        return [decision_code(True, [True])]
    if (
        isinstance(condition, AnyOf)
        and isinstance(option, AnyKey)
        and len(option.parts) == len(condition.children)
        and all(isinstance(child, Leaf) for child in condition.children)
    ):
        n = len(option.parts)
        return [
            decision_code(True, [False] * branch + [True] + [None] * (n - branch - 1))
            for branch in range(n)
        ]
    return None


class RuleIndex:
    """Buckets by (channel, event), built on first use and cached."""

    def __init__(self, rules: Iterable[Rule], program: Program, analysis: RuleAnalysis) -> None:
        """Index ``rules`` by what ``analysis`` found their conditions to be."""
        self.rules = list(rules)
        self.program = program
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self._options = analysis.options
        self.decidable = analysis.decidable
        self._getters: dict[str, Callable[..., Any]] = {}
        codes = {
            d.key_code for found in self._options.values() for o in found for d in option_parts(o)
        }
        codes.update(key for decides in self.decidable.values() for key in decides.keys)
        slots = {code: program.add_function(code) for code in codes}
        program.build()
        self._getters = {code: slot.function for code, slot in slots.items()}  # type: ignore[misc]

    def decider(self, rule: Rule) -> Decider | None:
        """``rule``'s decider (compiled now), or None when its conditions need the event."""
        decides = self.decidable.get(rule.name)
        return decides.compile(self.program) if decides is not None else None

    def why_not(self, rule: Rule, e: Any, now: Any, env: Any) -> str:
        """Why the index left ``rule`` out for this event (it must have left it out)."""
        option = self.bucket(e.channel, e.event).chosen.get(rule.name)
        if option is None:
            return "left out by the index"
        reasons = []
        for d in option_parts(option):
            try:
                value = self._getters[d.key_code](e, now, env)
            except Exception as exc:  # not excluded then; say what happened anyway
                reasons.append(f"{d.key_source} cannot be read ({type(exc).__name__})")
            else:
                reasons.append(d.why_not(value))
        return reasons[0] if len(reasons) == 1 else "none holds: " + "; ".join(reasons)

    def bucket(self, channel: str, event: str) -> Bucket:
        key = (channel, event)
        found = self._buckets.get(key)
        if found is None:
            found = self._build(channel, event)
            if len(self._buckets) < MAX_CACHED_BUCKETS:
                self._buckets[key] = found
        return found

    def _build(self, channel: str, event: str) -> Bucket:
        rules = [
            r
            for r in self.rules
            if (r.channels is None or channel in r.channels)
            and (r.events is None or event in r.events)
        ]
        always: list[Rule] = []
        chosen = choose_by_selectivity({rule.name: self._options[rule.name] for rule in rules})
        # a bucket whose every rule its tests decide is coded (Bucket.select_codes)
        decisions: list[list[int] | None] = []
        for rule in rules:
            option = chosen.get(rule.name)
            found = None
            if (
                option is not None
                and rule.name in self.decidable
                and len(self._options[rule.name]) == 1
            ):
                found = hit_decisions(rule, option)
            decisions.append(found)
        coded = bool(rules) and None not in decisions
        stride = max(map(len, cast(list[list[int]], decisions)), default=1) if coded else 0
        keys: dict[str, KeyIndex[Any]] = {}
        for number, rule in enumerate(rules):
            option = chosen.get(rule.name)
            if option is None:
                always.append(rule)
            else:
                for branch, d in enumerate(option_parts(option)):
                    entry = number * stride + branch if coded else rule
                    self._key(keys, d.key_code).add(entry, d)
            decides = self.decidable.get(rule.name)
            for code in decides.keys if decides is not None else ():
                self._key(keys, code)  # read for the rule's decider
        for key in keys.values():
            key.freeze()
        by_code: list[int] = []
        if coded:
            for found in decisions:
                assert found is not None
                by_code.extend(found + [0] * (stride - len(found)))
        return Bucket(rules, always, list(keys.values()), chosen, stride, by_code)

    def _key(self, keys: dict[str, KeyIndex[Any]], code: str) -> KeyIndex[Any]:
        key = keys.get(code)
        if key is None:
            key = keys[code] = KeyIndex(getter=self._getters[code], code=code)
        return key
