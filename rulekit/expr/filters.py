"""Built-in template filters, registered through the same hook as plugins' filters."""

from __future__ import annotations

from rulekit.hookspecs import hookimpl
from rulekit.registry import TemplateRegistry


@hookimpl
def rulekit_template_environment(register: TemplateRegistry) -> None:
    from rulekit.expr.sandbox import truncate_safe

    register.filter("truncate", truncate_safe)
