"""The work budget of one render (or of one event's conditions): the limits and their counting.

Every limit of the sandbox is defined here, and every check goes through :class:`Budget`:

* **values**: no string, list or dict built by a template has more than :data:`MAX_VALUE`
  characters or items, no number more than :data:`MAX_DIGITS` digits; operations that could
  build more (``*``, ``**``, ``%``, ``center``...) compute the size first and refuse;
* **output**: a rendered value has at most :data:`MAX_OUTPUT` characters;
* **built**: all the values one render builds together hold at most :data:`MAX_BUILT`
  characters or items (this bounds memory);
* **steps**: loop iterations (recursive ``loop()`` included), calls (macros, ``caller()``,
  methods, globals), filters (one step more per thousand characters of the text a filter
  reads, so that the CPU clock is read between long filters) and items drawn through filters
  together count at most :data:`MAX_STEPS`;
* **depth**: calls nest at most :data:`MAX_DEPTH` deep;
* **CPU**: a render stops after :data:`MAX_CPU_SECONDS` of its thread's CPU time (a backstop
  checked every few steps; the counts above are what normally stop a render).

Going over any of them raises :class:`OverBudget`, a one-line
:class:`~rulekit.errors.TemplateError` ("template over its budget: ...").
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from rulekit.errors import TemplateError

MAX_EXPRESSION = 4_000
"""Characters in one condition expression."""
MAX_TEMPLATE = 20_000
"""Characters in one template."""
MAX_OUTPUT = 100_000
"""Characters one rendered value may have."""
MAX_VALUE = 100_000
"""Characters or items one string, list or dict built by a template may have."""
MAX_DIGITS = 4_000
"""Decimal digits one number computed by a template may have."""
MAX_RANGE = 10_000
"""Items one ``range()`` may produce."""
MAX_STEPS = 100_000
"""Loop iterations, calls, filter uses and items drawn through filters, per render."""
MAX_BUILT = 500_000
"""Characters and items of all the values one render builds, together."""
MAX_DEPTH = 30
"""How deep calls (macros, ``caller()``, recursive ``loop()``, blocks) may nest."""
MAX_PLAN = 5_000_000
"""Characters the rendered parameters of all the actions one event plans may hold together
(each rule's are within :data:`MAX_BUILT`: 4,000 rules each repeating a 100,000-character
text made a plan of 400 MB, stored and sent by the daemon, 3 GB for ``rulekit test``)."""
MAX_CPU_SECONDS = 0.5
"""CPU time one render may use (the thread's own time, so a busy machine does not count);
below the evaluation worker's per-event budget, so that one slow template fails its rule only."""

_CHECK_CLOCK_EVERY = 64

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """The limits a budget starts from (by default the ``MAX_*`` values above)."""

    output: int = MAX_OUTPUT
    value: int = MAX_VALUE
    digits: int = MAX_DIGITS
    range: int = MAX_RANGE
    steps: int = MAX_STEPS
    built: int = MAX_BUILT
    depth: int = MAX_DEPTH
    cpu_seconds: float = MAX_CPU_SECONDS
    plan: int = MAX_PLAN

    @property
    def bits(self) -> int:
        """The bits of a number of :attr:`digits` digits."""
        return int(self.digits / 0.30103)  # log10(2)


DEFAULT_LIMITS = Limits()


class OverBudget(TemplateError):
    """A render went over one of the sandbox's limits; the message says which, on one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"template over its budget: {reason}")


def too_big(what: str) -> OverBudget:
    return OverBudget(f"{what} would be larger than {current().limits.value} characters or items")


class Budget:
    """What is left of one render's budget. ``clock`` (seconds of CPU) is injectable for tests."""

    __slots__ = ("_deadline", "_tick", "built", "clock", "depth", "limits", "planned", "steps")

    def __init__(
        self, clock: Callable[[], float] = time.thread_time, limits: Limits | None = None
    ) -> None:
        self.clock = clock
        self.limits = DEFAULT_LIMITS if limits is None else limits
        self.planned = self.limits.plan
        """What is left of :data:`MAX_PLAN` (not renewed: the event's, for all its rules)."""
        self.renew()

    def renew(self) -> None:
        """Start over with the whole budget (the next rule of an event gets its own)."""
        self.steps = self.limits.steps
        self.built = self.limits.built
        self.depth = 0
        self._tick = _CHECK_CLOCK_EVERY
        # the clock is first read at the first check: a budget that is never used much
        # costs no clock reading (conditions of thousands of rules renew it per rule)
        self._deadline: float | None = None

    def step(self, count: int = 1) -> None:
        """Count ``count`` steps; every few, check the CPU time."""
        self.steps -= count
        if self.steps < 0:
            raise OverBudget(
                f"more than {self.limits.steps} steps (loop iterations, calls, filters)"
            )
        self._tick -= count
        if self._tick <= 0:
            self._tick = _CHECK_CLOCK_EVERY
            now = self.clock()
            if self._deadline is None:
                self._deadline = now + self.limits.cpu_seconds
            elif now > self._deadline:
                raise OverBudget(f"more than {self.limits.cpu_seconds:g} s of CPU time")

    def build(self, size: int) -> None:
        """Count ``size`` characters or items of a newly built value."""
        self.built -= size
        if self.built < 0:
            raise OverBudget(
                f"more than {self.limits.built} characters and items built in one render"
            )

    def enter(self) -> None:
        """A call starts: one step, one level deeper. Pair with :meth:`leave`."""
        self.step()
        self.depth += 1
        if self.depth > self.limits.depth:
            self.depth -= 1
            raise OverBudget(f"calls nested more than {self.limits.depth} deep")

    def leave(self) -> None:
        self.depth -= 1


_current: contextvars.ContextVar[Budget] = contextvars.ContextVar("rulekit_budget")


def limits() -> Limits:
    """The limits of the active budget."""
    return current().limits


def current() -> Budget:
    """The active budget; outside any render, a fresh one (each operation's own limits still
    apply, so nothing runs unbounded)."""
    budget = _current.get(None)
    return Budget() if budget is None else budget


def with_budget(
    function: Callable[[], T],
    clock: Callable[[], float] = time.thread_time,
    limits: Limits | None = None,
) -> T:
    """Run a render (or the evaluation of one event's conditions) with a fresh budget."""
    token = _current.set(Budget(clock, limits))
    try:
        return function()
    except RecursionError:
        raise OverBudget("nested too deeply") from None
    finally:
        _current.reset(token)


def in_budget(chunks: Iterator[T]) -> Iterator[T]:
    """Draw ``chunks`` (a render's generator) with the budget active while each one is made:
    the caller's budget when there is one, else a fresh one for the whole render."""
    budget = _current.get(None) or Budget()
    while True:
        token = _current.set(budget)
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except RecursionError:
            raise OverBudget("nested too deeply") from None
        finally:
            _current.reset(token)
        yield chunk


class Counted:
    """An iterator whose items each cost one step (``for`` loops, lazy filter results)."""

    __slots__ = ("_budget", "_iterator")

    def __init__(self, iterable: Iterable[Any], budget: Budget) -> None:
        self._iterator = iter(iterable)
        self._budget = budget

    def __iter__(self) -> Counted:
        return self

    def __next__(self) -> Any:
        item = next(self._iterator)
        self._budget.step()
        return item


def counted(iterable: Iterable[Any]) -> Counted:
    """``iterable`` with each item counted against the active budget."""
    return iterable if isinstance(iterable, Counted) else Counted(iterable, current())


# -- sizes ---------------------------------------------------------------------------------


def digits(number: int) -> int:
    """Decimal digits of ``number`` (an upper bound, without converting it)."""
    return int(abs(number).bit_length() * 0.30103) + 1


def shallow_size(value: Any) -> int:
    """Characters of a string, items of a container, digits of a number; 1 for anything else.
    This is what a newly built value costs: a list's items are references."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    if isinstance(value, int):
        return digits(value)
    return 1


def text_size(value: Any, limit: int | None = None) -> int:
    """At least how many characters ``str(value)`` has, nested values included (``[s] * 3``
    holds ``s`` three times); counting stops soon after ``limit``. Strings inside containers
    count as their ``repr`` (quotes, escapes). No recursion: data may nest deep."""
    if limit is None:
        limit = current().limits.value
    total = 0
    pending: list[tuple[Any, bool]] = [(value, False)]
    while pending and total <= limit:
        item, nested = pending.pop()
        if isinstance(item, str):
            total += _repr_size(item) if nested else len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += digits(item) + 1  # the sign
        elif isinstance(item, list | tuple | set | frozenset | dict):
            total += 2 + 4 * len(item)
            if total <= limit:
                pending.extend((child, True) for child in item)
                if isinstance(item, dict):
                    pending.extend((child, True) for child in item.values())
        elif isinstance(item, BaseModel):
            fields = vars(item)
            total += 2 + 4 * len(fields) + sum(map(len, fields))
            if total <= limit:
                pending.extend((child, True) for child in fields.values())
        else:
            total += 80  # floats, dates: short texts (a date's repr is the longest)
    return total


def _repr_size(text: str) -> int:
    """At least ``len(repr(text))``, without building it: quotes, doubled backslashes and
    quotes; up to ten characters for a character that is not printable."""
    if not text.isprintable():
        return 10 * len(text) + 2
    return len(text) + text.count("\\") + text.count("'") + 2


def produced(result: T, *inputs: Any) -> T:
    """Check and count a value an operation returned: no bigger than :data:`MAX_VALUE` (or
    :data:`MAX_DIGITS`), charged to the budget unless it is one of ``inputs`` (nothing new
    was built); a lazy result (generator) gets each item counted as a step."""
    for value in inputs:
        if result is value:
            return result
    return charged(result, current())


def charged(result: T, budget: Budget) -> T:
    """:func:`produced` for a value known to be new, charged to ``budget``."""
    kind = type(result)
    if kind is str or kind is bool or result is None:  # the common results, first
        size = len(result) if kind is str else 1  # type: ignore[arg-type]
        if size > budget.limits.value:
            raise too_big("the result")
        budget.built -= size
        if budget.built < 0:
            budget.build(0)  # raises, saying which limit
        return result
    if isinstance(result, int) and not isinstance(result, bool):
        if result.bit_length() > budget.limits.bits:
            raise OverBudget(f"a number with more than {budget.limits.digits} digits")
        return result
    size = shallow_size(result)
    if size > budget.limits.value:
        raise too_big("the result")
    budget.build(size)
    if isinstance(result, Iterator) and not isinstance(result, Counted):
        return Counted(result, budget)  # type: ignore[return-value]
    return result


def to_text(value: Any) -> str:
    """``str(value)`` refusing values whose text would be too large (a list holding one big
    string many times is small in memory, not as text)."""
    if isinstance(value, str):
        return value
    budget = current()
    if text_size(value) > budget.limits.value:
        raise too_big("the text of a value")
    text = str(value)
    if len(text) > budget.limits.value:
        raise too_big("the text of a value")
    budget.build(len(text))
    return text
