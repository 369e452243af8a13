"""Compiling the templates in action parameters: a simple template (text and expressions)
becomes generated code, any other a sandboxed Jinja template rendered within its budget."""

from __future__ import annotations

from typing import Any

from rulekit.errors import RuleError, TemplateError
from rulekit.event import readable_changes
from rulekit.expr.codegen import simple_template_body, split_simple_template
from rulekit.expr.markup import defer
from rulekit.expr.parse import check_nesting, parse_expression
from rulekit.expr.sandbox import jinja_names, render_stream, with_budget
from rulekit.expr.timefunctions import CALENDAR_FUNCTIONS
from rulekit.rules.compilation import Compilation, Locator, ReferenceProblems
from rulekit.rules.spec import Value


class TemplateCompiler:
    """Compiles action parameters' templates into a :class:`Compilation`'s program."""

    def __init__(self, compilation: Compilation) -> None:
        self.compilation = compilation

    def values(
        self,
        raw: dict[str, Any],
        action_class: Any,
        at: Locator,
        path: tuple[Any, ...],
        errors: list[RuleError],
    ) -> dict[str, Any]:
        """An action's parameters with each template replaced by its compiled
        :class:`~rulekit.rules.spec.Value`; problems go to ``errors``."""
        # markup actions: values become placeholders, escaped once the action has said which
        # markup each rendered leaf is (rulekit.expr.markup); plain actions get values as they are
        escaper = defer if action_class.markup else None
        return {
            key: self._value(value, escaper, at, (*path, key), errors) for key, value in raw.items()
        }

    def _value(
        self, value: Any, escaper: Any, at: Locator, path: tuple[Any, ...], errors: list[RuleError]
    ) -> Any:
        if isinstance(value, dict):
            return {k: self._value(v, escaper, at, (*path, k), errors) for k, v in value.items()}
        if isinstance(value, list):
            return [self._value(v, escaper, at, (*path, i), errors) for i, v in enumerate(value)]
        if not isinstance(value, str) or not is_template(value):
            return value
        compilation = self.compilation
        try:
            compiled = self.template(value, escaper)
            compilation.note_team(at, path)
            if any(name in value for name in CALENDAR_FUNCTIONS):
                compilation.lint_calendars(compilation.environment.parse(value), at, path)
            return compiled
        except TemplateError as exc:
            errors.append(at.error(path, f"template: {exc}"))
        except ReferenceProblems as exc:
            for problem in exc.problems:
                errors.append(at.error(path, f"template: {problem}"))
        return None

    def template(self, source: str, escaper: Any) -> Value:
        """The compiled template ``source``, its output escaped with ``escaper``. Raises
        :class:`~rulekit.errors.TemplateError` or :class:`ReferenceProblems`."""
        compilation = self.compilation
        parts = split_simple_template(source)
        if parts is not None:
            try:
                for is_expression, text in parts:
                    if is_expression:
                        expr = parse_expression(text, compilation.environment)
                        compilation.check(expr)
                body = simple_template_body(compilation.program, parts, escaper)
            except TemplateError:
                parts = None
            else:
                value = Value()
                slot = compilation.program.add_function(body)
                compilation.bind_later(value, slot, attribute="render")
                return value
        environment = compilation.sandbox(escaper)
        try:
            tree = check_nesting(environment.parse(source))
            compilation.check(tree, local_names=jinja_names(tree))
            template = environment.from_string(tree)
        except TemplateError:
            raise
        except ReferenceProblems:
            raise
        except RecursionError:  # Jinja2's parser and compiler recurse with the nesting
            raise TemplateError(
                "the template nests too deeply (split it with macros or {% set %})"
            ) from None
        except Exception as exc:  # jinja2's TemplateSyntaxError and friends
            message = getattr(exc, "message", None) or str(exc)
            raise TemplateError(f"syntax error: {message}") from None

        def render(e: Any, now: Any, env: Any) -> str:
            context = {
                "channel": e.channel, "event": e.event, "conversation": e.conversation,
                "client": e.client, "message": e.message, "agent": e.agent, "origin": e.origin,
                "recovered": e.recovered, "changed": readable_changes(e.changed),
                "now": now, "env": env, "trigger": e.trigger, "team": e.team,
            }  # fmt: skip
            return with_budget(lambda: render_stream(template.generate(context)))

        return Value(render=render)


def is_template(text: str) -> bool:
    """Whether ``text`` holds Jinja syntax (and so is compiled rather than kept as it is)."""
    return "{{" in text or "{%" in text or "{#" in text


def templated_paths(raw: Any, prefix: tuple[Any, ...] = ()) -> set[tuple[Any, ...]]:
    """The paths inside ``raw`` (parameters as read) whose values are templates."""
    found: set[tuple[Any, ...]] = set()
    if isinstance(raw, dict):
        for key, value in raw.items():
            found |= templated_paths(value, (*prefix, key))
    elif isinstance(raw, list):
        for index, value in enumerate(raw):
            found |= templated_paths(value, (*prefix, index))
    elif isinstance(raw, str) and is_template(raw):
        found.add(prefix)
    return found
