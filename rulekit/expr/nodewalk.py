"""Walking expression trees fast: rules list hundreds of values (``client.country in ['DE',
'AT', ...]``), and Jinja2's generic walk (``find_all``) visits every constant of every list.
A list or tuple of constants is one value here: its items are not entered."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from jinja2 import nodes

_SEQUENCES = (nodes.List, nodes.Tuple)
_CONSTANT_ITEMS = "rulekit_constant_items"
_CONSTANT_VALUES = "rulekit_constant_values"


def constant(node: nodes.Node) -> bool:
    """A constant, or a list or tuple whose items are all constants."""
    if isinstance(node, _SEQUENCES):
        found = node.__dict__.get(_CONSTANT_ITEMS)
        if found is None:  # several walks ask: the answer is kept on the node
            found = node.__dict__[_CONSTANT_ITEMS] = all(
                type(item) is nodes.Const for item in node.items
            )
        return bool(found)
    return isinstance(node, nodes.Const)


def constant_values(node: nodes.Node) -> tuple[Any, ...] | None:
    """The values of a list or tuple whose items are all constants, else None. Conditions,
    the index and the lint all read them: the tuple is kept on the node."""
    if not isinstance(node, _SEQUENCES):
        return None
    found = node.__dict__.get(_CONSTANT_VALUES)
    if found is None and constant(node):
        items: list[Any] = node.items
        found = node.__dict__[_CONSTANT_VALUES] = tuple(item.value for item in items)
    return found


def constant_list(values: Iterable[Any]) -> nodes.List:
    """``nodes.List`` of ``values`` as constants, known as such (its items are made as
    :func:`make_const` makes them, here in one loop: lists hold hundreds)."""
    found = tuple(values)
    new = object.__new__
    items = []
    for value in found:
        node = new(nodes.Const)
        node.__dict__ = {"value": value, "lineno": None, "environment": None}
        items.append(node)
    made = nodes.List(items)
    made.__dict__[_CONSTANT_ITEMS] = True
    made.__dict__[_CONSTANT_VALUES] = found
    return made


def walk(tree: nodes.Node) -> Iterator[nodes.Node]:
    """``tree`` and the nodes under it, in file order, parents first; the items of a list of
    constants are not visited (constants refer to nothing and hold no patterns)."""
    stack: list[nodes.Node] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not constant(node):
            stack.extend(reversed(children(node)))


def children(node: nodes.Node) -> list[nodes.Node]:
    """The child nodes of ``node`` (what ``iter_child_nodes`` yields), as a list."""
    found: list[Any] = []
    for name in node.fields:
        value = getattr(node, name, None)
        if isinstance(value, nodes.Node):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, nodes.Node))
    return found


def make_const(value: Any) -> nodes.Const:
    """``nodes.Const(value)``, without the checks of Jinja2's generic constructor (hundreds of
    thousands are made while a large rule set loads)."""
    node = object.__new__(nodes.Const)
    node.__dict__ = {"value": value, "lineno": None, "environment": None}
    return node
