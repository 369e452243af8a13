"""Conditions: the Python-``ast`` fast path and Jinja2's parser mean the same thing, and both
agree with Jinja2's own evaluation (except where rulekit differs on purpose)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from scaffold import make_event

from rulekit.errors import TemplateError
from rulekit.expr import parse as expressions
from rulekit.expr.codegen import BUILD_CHUNK, Program
from rulekit.expr.parse import parse_expression
from rulekit.expr.sandbox import MAX_EXPRESSION, Sandbox

JINJA = ImmutableSandboxedEnvironment()
NOW = datetime(2025, 3, 14, 10, 0, tzinfo=UTC)
EVENT = make_event()

# Expressions over `env`, a plain dict, where rulekit and Jinja2 mean the same.
TABLE = [
    # filters, chains, arguments
    "env.A|lower",
    "env.A|upper|length",
    "env.L|sort|first",
    "env.L|join('-')",
    "env.A|replace('l', 'L')",
    "env.A|truncate(3, leeway=0)",
    "env.L|map('string')|join",
    "env.D|dictsort|first|first",
    "env.N|abs|string|length",
    "(env.A ~ env.B)|lower",
    # tests, with and without parentheses
    "env.A is defined",
    "env.N is divisibleby 3",
    "env.N is divisibleby(7)",
    "env.N is odd",
    "env.N is not even",
    "env.A is string",
    "env.Z is none",
    "env.A|lower is lower",
    "env.N + 1 is odd",
    "(env.N + 1) is odd",
    "env.N * 2 is divisibleby(7)",
    "not env.N is odd",
    "env.N > 1 is sameas true",
    # operators and precedence
    "env.A ~ env.N",
    "-2**2",
    "- env.N ** 2",
    "2 ** 3 ** 2",
    "2 ** (3 ** 2)",
    "(2 ** 3) ** 2",
    "env.A + env.B|lower",
    "-env.N|abs",
    "not env.A|length",
    "not env.E|length",
    "env.N - 1 * 2",
    "env.N // 2",
    "env.N / 2",
    "env.N % 4",
    "'%s!' % env.A",
    "1 < env.N < 10",
    "env.N < 10 == true",
    "not env.A == 'x'",
    "env.Z or env.E or 'x'",
    "env.N > 3 and env.A.startswith('He')",
    # slices, items, literals
    "env.A[1:3]",
    "env.A[::-1]",
    "env.L[-1]",
    "env.L[0:2]|length",
    "env.D.k",
    "env.D['n'] * 3",
    "{'a': 1, 'b': env.N}['b']",
    "[1, 2, env.N][2]",
    "(1, 2)[0]",
    "'a' 'b'",
    # membership, methods
    "'ell' in env.A",
    "env.A in ['Hello', 'x']",
    "env.A not in ['Hello']",
    "env.N is in [7, 8]",
    "env.A.lower().endswith('lo')",
    "env.D.get('k')",
    "env.A.split('l')[0]",
    # conditional expressions
    "env.N if env.T else 0",
    "env.N if env.Z",
    "'big' if env.N > 5 else 'small'",
    "true and not false",
    "none is none",
]

DATA = {
    "A": "Hello",
    "B": "World",
    "N": 7,
    "L": [3, 1, 2],
    "D": {"k": "v", "n": 2},
    "Z": 0,
    "E": "",
    "T": True,
}


def compiled(source: str, *, fast: bool) -> Any:
    """The generated function for ``source``, parsed by the fast path or by Jinja2's parser."""
    program = Program(Sandbox(), {})
    if fast:
        *_, slot = program.add_condition(source)
    else:
        expr = Parser(program.environment, source, state="variable").parse_expression()
        slot = program.add_function(program.expression_code(expr))
    program.build()
    return slot.function


def takes_fast_path(source: str) -> bool:
    try:
        expressions._convert(ast.parse(source, mode="eval").body)
    except Exception:
        return False
    return True


def jinja(source: str, env: dict[str, Any]) -> Any:
    return JINJA.compile_expression(source)(env=env)


@pytest.mark.parametrize("source", TABLE)
def test_fast_path_and_jinja_parser_agree_with_jinja(source: str) -> None:
    expected = jinja(source, DATA)
    for fast in (True, False):
        result = compiled(source, fast=fast)(EVENT, NOW, DATA)
        assert result == expected, (source, fast)
        assert type(result) is type(expected), (source, fast)


def test_the_table_exercises_both_parsers() -> None:
    fast = [s for s in TABLE if takes_fast_path(s)]
    assert len(fast) > len(TABLE) // 2
    assert len(fast) < len(TABLE)
    # the cases where Python and Jinja2 disagree never take the fast path
    for source in (
        "-2**2",
        "2 ** 3 ** 2",
        "env.N + 1 is odd",
        "env.A + env.B|lower",
        "env.A ~ 'x'",
    ):
        assert not takes_fast_path(source), source


texts = st.text(alphabet="abcXYZ _-.!0", max_size=8)
values = st.one_of(
    st.integers(-20, 20), texts, st.booleans(), st.lists(st.integers(0, 9), max_size=4)
)


@settings(max_examples=60, deadline=None)
@given(
    a=texts,
    b=texts,
    n=st.integers(-50, 50),
    items=st.lists(st.integers(-9, 9), min_size=1, max_size=5),
    source=st.sampled_from(
        [
            "env.A|lower == env.B|lower",
            "env.A + env.B|upper",
            "env.A ~ env.N",
            "env.N is divisibleby 3",
            "env.N + 1 is odd",
            "-env.N ** 2",
            "env.N ** 2 ** 1",
            "env.L|sum + env.N",
            "env.L|max if env.L else env.N",
            "env.A[1:] in env.B",
            "not env.A|length or env.N > 0",
            "env.L[env.N % (env.L|length)]",
            "{'k': env.A}.k ~ env.B",
            "env.A.startswith(env.B) or env.A.endswith('!')",
        ]
    ),
)
def test_random_data_gives_the_same_result(a, b, n, items, source) -> None:
    env = {"A": a, "B": b, "N": n, "L": items}
    expected = jinja(source, env)
    for fast in (True, False):
        assert compiled(source, fast=fast)(EVENT, NOW, env) == expected


@pytest.mark.parametrize("fast", [True, False])
def test_missing_data_is_none_not_undefined(fast: bool) -> None:
    # rulekit's missing data is None: `default` replaces None, `defined` means "not None"
    env = {"A": None}
    assert compiled("env.A|default('x')", fast=fast)(EVENT, NOW, env) == "x"
    assert compiled("env.A is defined", fast=fast)(EVENT, NOW, env) is False
    assert compiled("env.A is undefined", fast=fast)(EVENT, NOW, env) is True
    assert compiled("env.MISSING is defined", fast=fast)(EVENT, NOW, env) is False
    assert compiled("env.MISSING == none", fast=fast)(EVENT, NOW, env) is True
    assert compiled("env.A ~ 'x'", fast=fast)(EVENT, NOW, env) == "x"
    # ... where Jinja2 would keep None and call it defined
    assert jinja("env.A|default('x')", env) is None
    assert jinja("env.A is defined", env) is True


@pytest.mark.parametrize("fast", [True, False])
def test_event_fields_are_read_directly(fast: bool) -> None:
    event = make_event(client={"name": "Ana", "email": "ANA@x.io"}, message={"text": "Refund!"})
    check = compiled(
        "client.email|lower == 'ana@x.io' and 'refund' in message.text|lower", fast=fast
    )
    assert check(event, NOW, {}) is True
    assert compiled("message.author is none", fast=fast)(event, NOW, {}) is True


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("client.name ==", "syntax error"),
        ("a b c", "syntax error"),
        ("x" * (MAX_EXPRESSION + 1), f"over {MAX_EXPRESSION} characters"),
    ],
)
def test_bad_expressions(source: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason):
        parse_expression(source, Sandbox())


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    with pytest.raises(TemplateError):
        parse_expression("(" * 1500 + "1" + ")" * 1500, Sandbox())


def test_a_program_of_more_functions_than_one_module_holds_builds_them_all():
    program = Program(Sandbox(), {})
    count = BUILD_CHUNK * 2 + 3  # compiled a module at a time: three of them
    slots = [program.add_condition(f"{n} * 2 == {n * 2 + n % 2}")[2] for n in range(count)]
    program.build()
    assert [slot.function(None, None, {}) for slot in slots] == [n % 2 == 0 for n in range(count)]
    assert program.lines == []
