"""The membership shortcut (``client.country in ['DE', 'AT', ...]`` parsed without CPython's
parser) makes the tree CPython's parser makes, and what loading reads of that tree (the code,
the index's discriminator, the decider's test, the lint) is the same for both."""

from __future__ import annotations

import ast
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import nodes

from rulekit.engine import decide, discriminators
from rulekit.errors import Location
from rulekit.expr import parse as expressions
from rulekit.expr.codegen import Program
from rulekit.expr.nodewalk import constant, constant_list, constant_values
from rulekit.expr.parse import parse_expression
from rulekit.expr.sandbox import Sandbox
from rulekit.rules.lint import country_code_hints
from rulekit.rules.spec import Leaf, Rule


def by_cpython(source: str) -> nodes.Expr:
    """The tree of the general fast path: CPython's parser, converted."""
    return expressions._convert(ast.parse(source.strip(), mode="eval").body)


TAKEN = [
    "client.country in ['DE', 'AT']",
    'client.country in ["DE", "AT"]',
    "client.country in ['DE', \"it's\", 'say \"hi\"']",
    "client.country not in ['DE']",
    "client.country not \t in ['DE',]",
    "client.country in['DE']",
    "client.country in []",
    "client.country in [ ]",
    "client.email|lower in ['@a.example', '@b.example']",
    "message.text | lower|trim not in ['x',\n 'y' ,\n]",
    "country in ['', 'é🙂', 'a,b', '[x]', ' in ']",
    "client.custom.none in ['a']",
    "_x.y_1 in ['a']",
]

REFUSED = [
    "client.country in ['DE' 'AT']",  # implicit concatenation
    "client.country in ['DE',,]",
    "client.country in [,]",
    "client.country in ['\\d']",  # escapes: CPython and literal_escapes decide
    "client.country in [u'DE']",
    "client.country in ['DE', 1]",
    "client.country in ('DE', 'AT')",
    "client.country in ['''DE''']",
    "none.x in ['a']",  # a constant's attribute
    "true in ['a']",
    "client.if in ['a']",  # not Python: Jinja2's parser decides
    "client.country|not in ['a']",
    "client . country in ['a']",
    "client.country|lower() in ['a']",
    "client.country in ['a'] and x",
    "client.country\nin ['a']",
    "client.country in ['a\x00']",
    "client.country in ['a\r']",
    "client.country in ['\ud800']",
    "client.country in ['a'] # note",
]


@pytest.mark.parametrize("source", TAKEN)
def test_the_shortcut_makes_cpythons_tree(source: str) -> None:
    tree = expressions._membership(source.strip())
    assert tree is not None
    assert tree == by_cpython(source)
    assert repr(tree) == repr(by_cpython(source))
    assert parse_expression(source, Sandbox()) == tree


@pytest.mark.parametrize("source", REFUSED)
def test_other_expressions_take_the_general_path(source: str) -> None:
    assert expressions._membership(source.strip()) is None


NAME = st.sampled_from(["client", "country", "email", "x", "_y1", "lower"])
SPACE = st.sampled_from(["", " ", "  "])
PLAIN = st.characters(blacklist_characters="'\"\\\n\r\x00", blacklist_categories=("Cs",))
TEXT = st.text(PLAIN, max_size=6) | st.sampled_from(["a,b", "]", "' in '", '" in "'])
SEPARATOR = st.sampled_from([", ", ",", " , ", ",\n", "\t,"])
# what the shortcut must leave to the general path
ODD_NAME = st.sampled_from(["none", "True", "if", "not", "in", "é"])
ODD_SPACE = st.sampled_from(["\t", "\n", "\r", "\x0c", "\u00a0"])
ODD_TEXT = st.text(max_size=3)
ODD_SEPARATOR = st.sampled_from([",,", " ", "\r,", ",\x0c"])


@st.composite
def memberships(draw: Any, odd: bool) -> str:
    """Sources shaped like a membership test, valid (``odd``: also with what is not)."""
    name, space, text, separator = (
        (NAME | ODD_NAME, SPACE | ODD_SPACE, TEXT | ODD_TEXT, SEPARATOR | ODD_SEPARATOR)
        if odd
        else (NAME, SPACE, TEXT, SEPARATOR)
    )
    path = ".".join(draw(st.lists(name, min_size=1, max_size=3)))
    filters = "".join(f"{draw(space)}|{draw(space)}{n}" for n in draw(st.lists(name, max_size=2)))
    op = draw(st.sampled_from(["in", "not in", "not  in", "not\tin"]))
    quote = st.sampled_from(["'", '"'])
    texts = draw(st.lists(st.tuples(quote, text).filter(lambda qt: qt[0] not in qt[1])))
    items = draw(separator).join(f"{q}{t}{q}" for q, t in texts)
    trailing = draw(st.sampled_from(["", ",", " ", ", "]) if texts else space)
    return (
        f"{draw(space)}{path}{filters}{draw(space)} {op}{draw(space)}"
        f"[{draw(space)}{items}{trailing}]{draw(space)}"
    )


@settings(max_examples=300, deadline=None)
@given(memberships(odd=False))
def test_the_shortcut_takes_plain_memberships(source: str) -> None:
    tree = expressions._membership(source.strip())
    assert tree is not None
    assert tree == by_cpython(source)


@settings(max_examples=500, deadline=None)
@given(memberships(odd=True))
def test_whatever_the_shortcut_takes_cpython_parses_the_same(source: str) -> None:
    tree = expressions._membership(source.strip())
    if tree is not None:
        assert tree == by_cpython(source)


def analysed(tree: nodes.Expr, program: Program) -> tuple[Any, ...]:
    """What loading reads of a condition's tree: its code, the index's discriminator, the
    decider's test, the country-code lint."""
    found = discriminators.find_discriminator(tree, program)
    test = decide._leaf_test(
        tree, lambda node: discriminators.find_discriminator(node, program), program
    )
    leaf = Leaf("source with a country", "", Location("rules.yaml", 1), lambda body: None, tree)
    at = Location("rules.yaml", 1)
    rule = Rule("r", 0, at, channels=None, events=None, condition=leaf, steps=[])
    return (
        program.expression_code(tree),
        found,
        test,
        [warning.message for warning in country_code_hints(rule)],
    )


@pytest.mark.parametrize(
    "source",
    [
        "client.country in ['DE', 'AT', 'Germany']",
        "client.country not in ['DE']",
        "client.email|lower in ['@a.example', '@b.example']",
        "message.text|lower in ['hi', '']",
        "client.country in []",
    ],
)
def test_loading_reads_the_same_of_both_trees(source: str) -> None:
    program = Program(Sandbox(), {})
    shortcut = expressions._membership(source)
    assert shortcut is not None
    assert analysed(shortcut, program) == analysed(by_cpython(source), program)


def test_a_constant_list_knows_its_values() -> None:
    made = constant_list(["DE", "AT"])
    assert made == nodes.List([nodes.Const("DE"), nodes.Const("AT")])
    assert constant(made)
    assert constant_values(made) == ("DE", "AT")
    assert constant_values(nodes.Tuple([nodes.Const(1), nodes.Const(None)], "load")) == (1, None)
    assert constant_values(nodes.List([nodes.Const(1), nodes.Name("x", "load")])) is None
    assert constant_values(nodes.Const(1)) is None


class Text(str):
    """A ``str`` subclass: its type is not one of the plain ones."""


VALUES = st.lists(
    st.one_of(
        st.text(max_size=2),
        st.integers(),
        st.floats(),
        st.booleans(),
        st.none(),
        st.builds(Text, st.text(max_size=2)),
        st.just(b"x"),
        st.just(()),
    ),
    max_size=5,
)


@given(VALUES)
def test_value_checks_of_whole_lists_agree_with_each_value(values: list[Any]) -> None:
    found = tuple(values)
    assert discriminators._all_hashable(found) == all(discriminators._hashable(v) for v in found)
    assert decide._all_literal(found) == all(decide._literal(v) for v in found)
