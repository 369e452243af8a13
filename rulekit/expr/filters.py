"""Built-in template filters, registered through the same hook as plugins' filters."""

from __future__ import annotations

from rulekit.hookspecs import hookimpl
from rulekit.registry import TemplateRegistry


@hookimpl
def rulekit_template_environment(register: TemplateRegistry) -> None:
    from rulekit.expr import regex

    register.filter("regex_search", regex.regex_search)
    register.filter("regex_findall", regex.regex_findall)
    register.filter("regex_replace", regex.regex_replace)
    register.test("match", regex.is_match)
    register.test("search", regex.is_search)
