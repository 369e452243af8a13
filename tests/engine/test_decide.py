"""A rule's decider as a tree of tests (``rulekit.engine.decide.decision_tree``) gives the
decision the explainer's step-by-step form gives, runs the same tests in the same order, and
raises where that form raises; on random condition trees and outcomes."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rulekit.engine.decide import decision_tree
from rulekit.engine.explain import compile_explainer, leaves
from rulekit.errors import Location
from rulekit.expr.codegen import Program
from rulekit.expr.sandbox import Sandbox
from rulekit.rules.spec import AllOf, AnyOf, Condition, Leaf, NotOf

HERE = Location("rules.yaml")


def _leaf(number: int) -> Leaf:
    return Leaf(f"test {number}", "", HERE, compiler=lambda code: lambda *a: None)


condition = st.recursive(
    st.just("leaf"),
    lambda inner: st.one_of(
        st.tuples(st.just("not"), inner),
        st.tuples(st.just("any"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("all"), st.lists(inner, min_size=1, max_size=3)),
    ),
    max_leaves=8,
)


def build(shape: Any, counter: list[int]) -> Condition:
    if shape == "leaf":
        counter.append(len(counter))
        return _leaf(counter[-1])
    kind, parts = shape
    if kind == "not":
        return NotOf(build(parts, counter))
    children = [build(part, counter) for part in parts]
    return AnyOf(children) if kind == "any" else AllOf(children)


def leaf_code(leaf: Leaf) -> str:
    # each test records that it ran, then gives its outcome (or raises, for "error")
    number = int(leaf.source.split()[1])
    return f"_test(v, {number})"


def run(decide: Any, outcomes: list[str]) -> tuple[Any, list[int]]:
    ran: list[int] = []

    def outcome(values: Any, number: int) -> bool:
        ran.append(number)
        if outcomes[number] == "error":
            raise ValueError("no outcome")
        return outcomes[number] == "true"

    decide.__globals__["_test"] = outcome
    try:
        return decide({}), ran
    except ValueError:
        return "raised", ran


@settings(max_examples=300, deadline=None)
@given(shape=condition, data=st.data())
def test_the_tree_decides_as_the_step_by_step_decider(shape: Any, data: Any) -> None:
    tree = build(shape, [])
    count = len(leaves(tree))
    outcomes = data.draw(
        st.lists(st.sampled_from(["true", "false", "error"]), min_size=count, max_size=count)
    )
    source = decision_tree(tree, leaf_code)
    assert source is not None  # small trees are always generated
    program = Program(Sandbox(), {})
    decided = program.compile_definition(source, "decide")
    stepwise = compile_explainer(tree, program, code_of=leaf_code, arguments="v", coded=True)
    assert run(decided, outcomes) == run(stepwise, outcomes)


def test_a_condition_with_too_many_paths_is_left_to_the_step_by_step_decider() -> None:
    counter: list[int] = []
    # all of 12 `any` pairs: a path for each of 2**12 ways to decide them
    tree = AllOf([AnyOf([_leaf(len(counter)), _leaf(len(counter))]) for _ in range(12)])
    assert decision_tree(tree, lambda leaf: "v") is None
