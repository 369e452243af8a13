"""Explaining a rule's condition, condition by condition, at the speed of the fast path.

The trace the daemon records says, for each candidate rule, how each of its conditions came out:
true, false, not evaluated (an earlier one decided), or the error that stopped the evaluation.
Walking the condition tree and calling one function per condition costs several times what the
rule's own matcher costs; instead, each rule gets one generated function that evaluates its
conditions in order, with the same short-circuits, and appends each outcome to a list. It is
compiled the first time the rule is explained (most rules of a large set never are, or much
later), and rules whose condition nests too deeply for generated code are walked instead.

Outcomes are kept compact — the rule's condition sources (one tuple per rule) and one
``True``/``False``/``None`` per condition — and turned into
:class:`~rulekit.engine.engine.ConditionResult` objects only when someone reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rulekit.expr.codegen import Program
from rulekit.rules.spec import AnyOf, Condition, Leaf, NotOf

MAX_DEPTH = 40
"""Deeper condition trees are explained by walking them (generated code nests per level)."""

Explainer = Callable[[Any, Any, Any, list[bool | None]], bool]
"""``explainer(e, now, env, outcomes)``: the condition's result; one outcome appended per
condition evaluated (``None`` for each one skipped); raises what the failing condition raised,
``len(outcomes)`` being that condition's position."""


def leaves(condition: Condition) -> list[Leaf]:
    """The single conditions of a condition tree, in evaluation order."""
    out: list[Leaf] = []
    stack: list[Condition] = [condition]
    while stack:
        current = stack.pop()
        if isinstance(current, Leaf):
            out.append(current)
        elif isinstance(current, NotOf):
            stack.append(current.child)
        else:
            stack.extend(reversed(current.children))
    return out


def compile_explainer(
    condition: Condition,
    program: Program,
    *,
    code_of: Callable[[Leaf], str] | None = None,
    arguments: str = "e, now, env, o",
    coded: bool = False,
) -> Any:
    """One function explaining ``condition`` (see :data:`Explainer`). ``code_of`` gives each
    condition's code (default: its own) and ``arguments`` the function's parameters, the list
    of outcomes last (the deciders of :mod:`.decide` read values instead of the event).
    ``coded``: the outcomes and the result as one number (:func:`decision_code`), returned,
    and no list of outcomes among the parameters."""
    if depth(condition) > MAX_DEPTH:
        if code_of is not None:
            raise ValueError("too deep for generated code")
        return _walker(condition)
    lines: list[str] = [f"def explain({arguments}):"]
    shifts = None
    if coded:
        lines.append("    k = 0")
        shifts = {id(leaf): 2 * n for n, leaf in enumerate(leaves(condition))}
    _emit(condition, lines, 1, code_of or _own_code, shifts)
    lines.append("    return k + k + r" if coded else "    return r")
    return program.compile_definition("\n".join(lines) + "\n", "explain")


def decision_code(matched: bool, outcomes: Sequence[bool | None]) -> int:
    """A decision as one number: the result in the lowest bit, then two bits per condition
    (``01`` true, ``10`` false, ``00`` not evaluated), the first condition lowest."""
    code = 0
    for n, outcome in enumerate(outcomes):
        if outcome is not None:
            code |= (1 if outcome else 2) << (2 * n)
    return 2 * code + matched


def decision_of(code: int, conditions: int) -> tuple[bool, list[bool | None]]:
    """The result and outcomes of ``conditions`` conditions that :func:`decision_code` gave
    ``code``."""
    outcomes: list[bool | None] = []
    bits = code >> 1
    for n in range(conditions):
        pair = (bits >> (2 * n)) & 3
        outcomes.append(None if pair == 0 else pair == 1)
    return bool(code & 1), outcomes


def _own_code(leaf: Leaf) -> str:
    return leaf.code


def depth(condition: Condition) -> int:
    """How deeply generated code for ``condition`` nests (compared with :data:`MAX_DEPTH`)."""
    if isinstance(condition, Leaf):
        return 1
    if isinstance(condition, NotOf):
        return 1 + depth(condition.child)
    return len(condition.children) + max(depth(child) for child in condition.children)


def _emit(
    condition: Condition,
    lines: list[str],
    level: int,
    code_of: Callable[[Leaf], str],
    shifts: dict[int, int] | None,
) -> None:
    """Statements leaving the condition's result in ``r``; each outcome appended to ``o``, or,
    with ``shifts`` (each leaf's bits by its ``id``), added to ``k`` (see :func:`decision_code`:
    not evaluated adds nothing)."""
    pad = "    " * level
    if isinstance(condition, Leaf):
        lines.append(f"{pad}r = not not ({code_of(condition)})")
        if shifts is None:
            lines.append(f"{pad}o.append(r)")
        else:
            shift = shifts[id(condition)]
            lines.append(f"{pad}k += {1 << shift} if r else {2 << shift}")
        return
    if isinstance(condition, NotOf):
        _emit(condition.child, lines, level, code_of, shifts)
        lines.append(f"{pad}r = not r")
        return
    decisive = isinstance(condition, AnyOf)
    children = condition.children
    for index, child in enumerate(children):
        _emit(child, lines, level, code_of, shifts)
        rest = sum(len(leaves(later)) for later in children[index + 1 :])
        if not rest:
            break
        lines.append(f"{pad}if r is {decisive}:")
        skipped = f"o.extend({(None,) * rest!r})" if shifts is None else "pass"
        lines.append(f"{pad}    {skipped}")
        lines.append(f"{pad}else:")
        level += 1
        pad = "    " * level


def _walker(condition: Condition) -> Explainer:
    def explain(e: Any, now: Any, env: Any, out: list[bool | None]) -> bool:
        return _walk(condition, e, now, env, out)

    return explain


def _walk(condition: Condition, e: Any, now: Any, env: Any, out: list[bool | None]) -> bool:
    if isinstance(condition, Leaf):
        result = bool(condition.function(e, now, env))
        out.append(result)
        return result
    if isinstance(condition, NotOf):
        return not _walk(condition.child, e, now, env, out)
    decisive = isinstance(condition, AnyOf)
    for index, child in enumerate(condition.children):
        if _walk(child, e, now, env, out) is decisive:
            for rest in condition.children[index + 1 :]:
                out.extend([None] * len(leaves(rest)))
            return decisive
    return not decisive
