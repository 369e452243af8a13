"""Load-time hints about rules that load but are probably not what their author meant."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes

from rulekit.config import Config
from rulekit.errors import RuleError, did_you_mean
from rulekit.event import EVENT_NAMES
from rulekit.expr.nodewalk import children, constant, constant_values
from rulekit.rules.spec import AllOf, AnyOf, Condition, Leaf, NotOf, Rule


def leaves(condition: Condition | None) -> Iterator[Leaf]:
    """The expression strings of a condition tree, in file order."""
    if condition is None:
        return
    if isinstance(condition, Leaf):
        yield condition
    elif isinstance(condition, NotOf):
        yield from leaves(condition.child)
    elif isinstance(condition, AllOf | AnyOf):
        for child in condition.children:
            yield from leaves(child)


def country_code_hints(rule: Rule) -> list[RuleError]:
    """``client.country`` holds a country's *name* ("Germany", as chat services send it): a
    rule comparing it with a two-letter code (``client.country == 'DE'``, ``client.country in
    ['DE', 'AT']``) never matches; ``client.country_code`` is what it means."""
    hints: list[RuleError] = []
    for leaf in leaves(rule.condition):
        if "country" not in leaf.source:  # no client.country to look for in its tree
            continue
        codes = sorted(
            {code for compare in _compares(leaf.node) for code in _country_codes(compare)}
        )
        if codes:
            listed = ", ".join(repr(code) for code in codes)
            hints.append(
                RuleError(
                    f"rule {rule.name!r} compares client.country with {listed}, but "
                    "client.country is a country's name ('Germany'): use client.country_code "
                    f"(ISO 3166-1 alpha-2) in {leaf.source!r}",
                    leaf.location,
                )
            )
    return hints


def _compares(node: Any) -> list[nodes.Compare]:
    """The comparisons in a node tree (constants and lists of constants are not entered: rules
    list hundreds of values)."""
    if not isinstance(node, nodes.Node):
        return []
    found: list[nodes.Compare] = []
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, nodes.Compare):
            found.append(current)
        if not constant(current):
            stack.extend(children(current))
    return found


_CASE_FILTERS = frozenset({"lower", "upper", "trim", "string"})


def _is_client_country(node: Any) -> bool:
    """``client.country`` (or ``trigger.client.country``), also through ``|upper`` and the
    like."""
    while isinstance(node, nodes.Filter) and node.name in _CASE_FILTERS and not node.args:
        node = node.node
    if not (isinstance(node, nodes.Getattr) and node.attr == "country"):
        return False
    client = node.node
    if not (isinstance(client, nodes.Getattr | nodes.Name)):
        return False
    if isinstance(client, nodes.Name):
        return client.name == "client"
    return (
        client.attr == "client"
        and isinstance(client.node, nodes.Name)
        and client.node.name == "trigger"
    )


def _country_codes(compare: nodes.Compare) -> Iterator[str]:
    operands = [compare.expr, *(operand.expr for operand in compare.ops)]
    if not any(_is_client_country(operand) for operand in operands):
        return
    for operand in operands:
        values: Iterable[Any] = ()
        if isinstance(operand, nodes.Const):
            values = (operand.value,)
        elif isinstance(operand, nodes.List | nodes.Tuple):
            values = constant_values(operand) or [
                item.value for item in operand.items if isinstance(item, nodes.Const)
            ]
        for value in values:
            if isinstance(value, str) and len(value) == 2 and value.isalpha():
                yield value


def lint_rules(rules: list[Rule], config: Config) -> list[RuleError]:
    """Warnings about rules that load but cannot do what they say: a channel not configured,
    an event no channel emits, a rule that an earlier ``stop`` rule always hides, and
    :func:`country_code_hints`."""
    warnings = [warning for rule in rules for warning in lint_rule(rule, config)]
    return warnings + hidden_rules(rules)


def lint_rule(rule: Rule, config: Config) -> list[RuleError]:
    """The warnings of :func:`lint_rules` about one rule on its own (its conditions' trees are
    still there): a channel not configured, an event no channel emits, country codes."""
    warnings = country_code_hints(rule)
    channels = list(config.channels)
    for channel in rule.channels or ():
        if channel not in config.channels:
            hint = did_you_mean(channel, channels)
            known = ", ".join(channels) or "none"
            warnings.append(
                RuleError(
                    f"rule {rule.name!r} can never fire: channel {channel!r} is not "
                    f"configured{hint} (configured: {known})",
                    rule.location,
                )
            )
    for event in rule.events or ():
        if event not in EVENT_NAMES:
            warnings.append(
                RuleError(
                    f"rule {rule.name!r} can never fire: no channel emits event "
                    f"{event!r}{did_you_mean(event, EVENT_NAMES)}",
                    rule.location,
                )
            )
    return warnings


MAX_STOP_SHAPES = 100
"""Most shapes (channels, events, own events) of unconditional ``stop`` rules that later rules
are checked against: the check stays linear in the number of rules (a file of thousands of
``stop`` rules took minutes and gigabytes when each was checked against every later rule)."""


def hidden_rules(rules: list[Rule]) -> list[RuleError]:
    """The warnings of :func:`lint_rules` about rules an earlier ``stop`` rule always hides:
    one per hidden rule, naming the first rule that hides it. A stop rule whose shape an
    earlier one covers adds nothing (what it hides, the earlier one hides too); only the first
    :data:`MAX_STOP_SHAPES` shapes are checked."""
    warnings: list[RuleError] = []
    stops: list[tuple[_Shape, Rule]] = []
    for rule in rules:
        shape = _Shape(rule)
        earlier = next((stop for covering, stop in stops if covering.covers(shape)), None)
        if earlier is not None:
            warnings.append(
                RuleError(
                    f"rule {rule.name!r} can never fire: rule {earlier.name!r} "
                    f"({earlier.location}) stops every event it would see",
                    rule.location,
                )
            )
        elif rule.stop and rule.condition is None and not rule.cooldown:
            if len(stops) < MAX_STOP_SHAPES:
                stops.append((shape, rule))
    return warnings


class _Shape:
    """What a rule listens to, for telling whether a stop rule sees all of it."""

    __slots__ = ("channels", "events", "own")

    def __init__(self, rule: Rule) -> None:
        self.channels = None if rule.channels is None else frozenset(rule.channels)
        self.events = None if rule.events is None else frozenset(rule.events)
        self.own = rule.allow_own_events

    def covers(self, other: _Shape) -> bool:
        return (
            _covers(self.channels, other.channels)
            and _covers(self.events, other.events)
            and (self.own or not other.own)
        )


def _covers(wide: frozenset[str] | None, narrow: frozenset[str] | None) -> bool:
    if wide is None:
        return True
    return narrow is not None and narrow <= wide
