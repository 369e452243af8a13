"""Property: whatever a rule author nests (loops in macros in recursion, formatting,
arithmetic, filters), a render finishes within the budget or stops with the budget's one-line
error, and never holds more than a memory cap (traced by ``tracemalloc``).

Expressions are typed (text, number, list) so that most generated templates are valid and
reach the budget rather than a type error; type errors stay allowed outcomes. The quick runs use
limits ten times smaller than the real ones (same code, a tenth of the work per example) and a
cap ten times smaller; the slow run and the worst cases use the real limits and
:data:`MEMORY_CAP`.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from datetime import UTC, datetime
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scaffold import make_event

from rulekit.errors import TemplateError
from rulekit.expr.budget import DEFAULT_LIMITS, Limits, OverBudget, with_budget
from rulekit.expr.codegen import Program
from rulekit.expr.policy import format_size
from rulekit.expr.sandbox import Sandbox, render_stream

MEMORY_CAP = 64 * 2**20
"""What one render may hold at its peak with the real limits (the documented bound)."""
SMALL = Limits(
    output=10_000, value=10_000, digits=400, range=1_000, steps=10_000, built=50_000, cpu_seconds=60
)
REAL = dataclasses.replace(DEFAULT_LIMITS, cpu_seconds=60)  # the counts decide, not the tracer
SMALL_CAP = MEMORY_CAP // 10

# errors a badly typed template may raise; anything else (RecursionError, MemoryError, a
# crash of the sandbox itself) fails the property
ORDINARY = (
    TypeError,
    ValueError,
    ZeroDivisionError,
    OverflowError,
    LookupError,
    AttributeError,
    jinja2.TemplateError,  # syntax errors, undefined names, the sandbox's SecurityError
)

NUMBERS = st.sampled_from(["0", "1", "2", "3", "7", "10", "99", "1000", "9999", "99999", "10**6"])
TEXTS = st.sampled_from(["'x'", "'ab '", "'<&>'", "'€'", "'%s'", "'a\\n'", "message.text"])
LISTS = st.sampled_from(["[1, 2, 3]", "client.custom.rows", "['a', 'b']", "range(100)|list"])


def _expressions() -> tuple[Any, Any, Any]:
    def number(inner: Any) -> Any:
        n, t, ls = inner
        return st.one_of(
            st.tuples(n, st.sampled_from(["*", "**", "+", "-", "//", "%"]), n).map(
                lambda p: f"({p[0]} {p[1]} {p[2]})"
            ),
            t.map(lambda x: f"({x})|length"),
            ls.map(lambda x: f"({x})|length"),
            ls.map(lambda x: f"({x})|select('number')|sum"),
            t.map(lambda x: f"({x})|int"),
        )

    def text(inner: Any) -> Any:
        n, t, ls = inner
        both = st.tuples(t, n)
        pair = st.tuples(t, t)
        return st.one_of(
            both.map(lambda p: f"({p[0]} * {p[1]})"),
            pair.map(lambda p: f"({p[0]} ~ {p[1]})"),
            st.tuples(n, t).map(lambda p: f"('%' ~ {p[0]} ~ 's%s') % ({p[1]}, {p[1]})"),
            st.tuples(n, n).map(lambda p: f"('%*d|%.' ~ {p[0]} ~ 'f') % ({p[1]}, 1, 2.5)"),
            st.tuples(n, t).map(lambda p: f"'%(a)s%(a)' ~ {p[0]} ~ 's' % {{'a': {p[1]}}}"),
            pair.map(lambda p: f"({p[0]})|format({p[1]})"),
            both.map(lambda p: f"({p[0]})|center({p[1]})"),
            pair.map(lambda p: f"({p[0]})|indent({p[1]})"),
            st.tuples(t, n, t).map(lambda p: f"({p[0]})|wordwrap({p[1]}, wrapstring={p[2]})"),
            st.tuples(t, t, t).map(lambda p: f"({p[0]})|replace({p[1]}, {p[2]})"),
            st.tuples(ls, t).map(lambda p: f"({p[0]})|join({p[1]})"),
            st.tuples(t, n, t).map(lambda p: f"({p[0]})|truncate({p[1]}, end={p[2]})"),
            pair.map(lambda p: f"({p[0]})|urlize(target={p[1]})"),
            ls.map(lambda x: f"({x})|string"),
            n.map(lambda x: f"({x})|string"),
            t.map(lambda x: f"({x})|e|upper"),
        )

    def listing(inner: Any) -> Any:
        n, t, ls = inner
        return st.one_of(
            st.tuples(ls, n).map(lambda p: f"({p[0]} * {p[1]})"),
            st.tuples(ls, ls).map(lambda p: f"({p[0]} + {p[1]})"),
            t.map(lambda x: f"({x})|list"),
            st.tuples(ls, n, t).map(lambda p: f"({p[0]})|batch({p[1]}, {p[2]})|list"),
            st.tuples(ls, n).map(lambda p: f"({p[0]})|slice({p[1]})|list"),
            ls.map(lambda x: f"({x})|unique|list"),
            ls.map(lambda x: f"({x})|map('string')|list"),
            st.tuples(t, t).map(lambda p: f"[{p[0]}, {p[1]}, {p[0]}]"),
            n.map(lambda x: f"range({x})|list"),
        )

    n, t, ls = NUMBERS, TEXTS, LISTS
    for _ in range(3):  # three levels of nesting, each built from the one below
        below = (n, t, ls)
        n = st.one_of(NUMBERS, number(below))
        t = st.one_of(TEXTS, text(below))
        ls = st.one_of(LISTS, listing(below))
    return n, t, ls


_LEVELS = _expressions()
# deferred: hypothesis describes strategies by their repr, which three levels make huge
NUMBER = st.deferred(lambda: _LEVELS[0])
TEXT = st.deferred(lambda: _LEVELS[1])
LIST = st.deferred(lambda: _LEVELS[2])
EXPRESSION = st.one_of(NUMBER, TEXT, LIST)


def _blocks(inner: Any) -> Any:
    body = st.lists(inner, min_size=1, max_size=3).map("".join)
    return st.one_of(
        st.tuples(LIST, body).map(lambda p: f"{{% for v in {p[0]} %}}{p[1]}{{% endfor %}}"),
        st.tuples(LIST, NUMBER, LIST, body).map(
            lambda p: (
                f"{{% for v in {p[0]} recursive %}}{p[3]}{{% if loop.depth < {p[1]} %}}"
                f"{{{{ loop({p[2]}) }}}}{{% endif %}}{{% endfor %}}"
            )
        ),
        st.tuples(body, NUMBER).map(
            lambda p: (
                "{% macro m(n) %}{% if n > 0 %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}"
                f"{p[0]}{{% endmacro %}}{{{{ m({p[1]}) }}}}"
            )
        ),
        body.map(
            lambda b: (
                "{% macro c() %}{{ caller() }}{{ caller() }}{% endmacro %}"
                f"{{% call c() %}}{b}{{% endcall %}}"
            )
        ),
        st.tuples(EXPRESSION, body).map(lambda p: f"{{% set s = {p[0]} %}}{p[1]}{{{{ s }}}}"),
        body.map(lambda b: f"{{% set s %}}{b}{{% endset %}}{{{{ s }}}}{{{{ s|length }}}}"),
        body.map(lambda b: f"{{% filter upper %}}{b}{{% endfilter %}}"),
    )


TEMPLATE = st.recursive(
    st.one_of(EXPRESSION.map(lambda e: f"{{{{ {e} }}}}"), st.sampled_from(["x", "{{ v }}"])),
    _blocks,
    max_leaves=8,
)
DATA = {
    "message": make_event(message={"text": "hello www.example.com\n" * 20}).message,
    "client": make_event(client={"custom": {"rows": list(range(50))}}).client,
}


def outcome(render: Any, limits: Limits, cap: int, bound: int | None = None) -> str:
    """Run ``render`` under a budget with memory traced; the outcome's kind.

    ``render`` returns something sized; its size is at most ``bound`` (the output limit when
    not given: a template's text).
    """
    tracemalloc.start()
    try:
        result = with_budget(render, limits=limits)
        assert len(result) <= (limits.output if bound is None else bound)
        return "rendered"
    except OverBudget as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith("template over its budget: ")
        return "over budget"
    except (TemplateError, *ORDINARY):
        return "error"
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < cap, f"peak {peak / 2**20:.1f} MiB"


def _check_template(source: str, limits: Limits = SMALL, cap: int = SMALL_CAP) -> None:
    # compiling is traced too: Jinja2 computes constant parts while compiling
    outcome(lambda: render_stream(Sandbox().from_string(source).generate(DATA)), limits, cap)


def _check_condition(source: str) -> None:
    environment = Sandbox()
    program = Program(environment, dict(environment.globals))
    try:
        *_, slot = program.add_condition(source)
        program.build()
    except TemplateError:
        return
    event = make_event(**{k: v.model_dump() for k, v in DATA.items()})
    now = datetime(2025, 1, 1, tzinfo=UTC)
    # a condition's value is never printed: it is bounded as a value (a string's or a
    # collection's length), not as output
    outcome(lambda: _sized(slot.function(event, now, {})), SMALL, SMALL_CAP, SMALL.value)  # type: ignore[misc]


def _sized(value: Any) -> Any:
    return value if isinstance(value, (str, bytes, list, tuple, dict, set)) else str(value)


QUICK = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HEAVY = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
@QUICK
@given(TEMPLATE)
def test_nested_templates_finish_within_budget_or_stop_cleanly(source: str) -> None:
    _check_template(source)


@QUICK
@given(EXPRESSION)
def test_compiled_conditions_finish_within_budget_or_stop_cleanly(source: str) -> None:
    _check_condition(source)


@pytest.mark.slow
@HEAVY
@given(TEMPLATE)
def test_nested_templates_with_the_real_limits(source: str) -> None:
    _check_template(source, REAL, MEMORY_CAP)


@pytest.mark.parametrize(
    "source",
    [
        # the known worst cases for memory: many new small objects per counted item
        "{% set s = '€' * 99999 %}" + "".join(f"{{% set a{i} = s|list %}}" for i in range(5)),
        "{% set s = '€ ' * 49999 %}" + "".join(f"{{% set a{i} = s.split() %}}" for i in range(5)),
        "{% set s = '€' * 99999 %}{% set a = s|list|batch(1)|list %}{% set b = a|list %}",
        "{% set d = {'a': 1, 'b': 2} %}{% set a = (d.items()|list) * 49999 %}{{ a|length }}",
    ],
)
def test_worst_cases_stay_under_the_memory_cap(source: str) -> None:
    _check_template(source, REAL, MEMORY_CAP)


SPEC_PART = st.sampled_from(
    ["x", "ab ", "%s", "%5s", "%.3s", "%-8d", "%+05d", "%*d", "%.*f", "%r", "%x", "%o", "%e",
     "%g", "%c", "%%", "%10.4f", "%a", "%#x", "%i", "%u", "%X", "%E", "%G", "%.0f"]
)  # fmt: skip
KEYED_PART = st.sampled_from(["x", "%(a)s", "%(b)5d", "%(a)r", "%%", "%(b).2f", "%(a)-9s"])
ARGUMENT = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.text(max_size=5), max_size=4),
)


@settings(max_examples=300, deadline=None)
@example("%E", (0,), "", {"a": 0, "b": 0})  # a float conversion of an int: '0.000000E+00'
@example("%#x", (0,), "", {"a": 0, "b": 0})
@given(
    st.lists(SPEC_PART, max_size=8).map("".join),
    st.lists(st.one_of(ARGUMENT, st.integers(0, 30)), max_size=10).map(tuple),
    st.lists(KEYED_PART, max_size=6).map("".join),
    st.fixed_dictionaries(
        {"a": ARGUMENT, "b": st.one_of(st.integers(-999, 999), st.floats(-1e6, 1e6))}
    ),
)
def test_the_format_size_is_never_below_the_formatted_length(
    spec: str, args: tuple[Any, ...], keyed: str, mapping: dict[str, Any]
) -> None:
    for fmt, values in ((spec, args), (keyed, mapping)):
        try:
            text = fmt % values
        except (TypeError, ValueError, OverflowError, KeyError):
            continue
        assert len(text) <= format_size(fmt, values, 10**9), (fmt, values)
