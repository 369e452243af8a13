"""Templates: escaping by target, None, truncate, the sandbox and its work limits.

Each case runs twice: as a simple template (compiled to Python) and as a full Jinja2 template
(an ``{% if true %}`` around it forces Jinja2's own compiler).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from markupsafe import Markup
from scaffold import make_event

from rulekit.errors import TemplateError, ValidationErrors
from rulekit.expr import budget
from rulekit.expr.sandbox import MAX_OUTPUT, Sandbox, truncate_safe, with_budget

BOTH = pytest.mark.parametrize("full", [False, True], ids=["simple", "jinja"])


@pytest.fixture(autouse=True)
def _counts_not_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counted limits decide these tests, not the CPU backstop (tested in test_sandbox)."""
    limits = dataclasses.replace(budget.DEFAULT_LIMITS, cpu_seconds=60)
    monkeypatch.setattr(budget, "DEFAULT_LIMITS", limits)


def _wrap(template: str, full: bool) -> str:
    return "{% if true %}" + template + "{% endif %}" if full else template


def _rules(action: str, params: dict[str, Any]) -> str:
    return (
        f"- name: t\n  on: {{channel: online-chat}}\n  do:\n    - {action}: {json.dumps(params)}\n"
    )


def plan_for(build_engine, action: str, params: dict[str, Any], **event: Any):
    engine = build_engine(_rules(action, params))
    return engine.evaluate(make_event(**event), explain=True)


def render(build_engine, action: str, params: dict[str, Any], **event: Any) -> dict[str, Any]:
    plan = plan_for(build_engine, action, params, **event)
    assert plan.errors == []
    assert len(plan) == 1
    return plan[0].params


def render_error(build_engine, template: str, **event: Any) -> str:
    plan = plan_for(build_engine, "telegram", {"chat_id": 1, "text": template}, **event)
    assert list(plan) == [], "the action must not be planned"
    assert len(plan.errors) == 1
    return plan.errors[0]


def load_error(build_engine, template: str) -> str:
    with pytest.raises(ValidationErrors) as caught:
        build_engine(_rules("telegram", {"chat_id": 1, "text": template}))
    return str(caught.value)


# -- escaping -------------------------------------------------------------------------------


@BOTH
def test_slack_escapes_interpolated_values_not_literal_text(build_engine, full: bool) -> None:
    text = _wrap("*Refund* <https://x.example|link> from {{ client.name }}", full)
    params = render(
        build_engine, "slack", {"channel": "#a", "text": text}, client={"name": "<!channel> & co"}
    )
    assert params["text"] == "*Refund* <https://x.example|link> from &lt;!channel&gt; &amp; co"


@BOTH
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("HTML", "<b>a_b*c &lt;i&gt; &amp;</b>"),
        ("MarkdownV2", "<b>a\\_b\\*c <i\\> &</b>"),
        ("none", "<b>a_b*c <i> &</b>"),
    ],
)
def test_telegram_escapes_by_parse_mode(build_engine, full: bool, mode: str, expected: str) -> None:
    text = _wrap("<b>{{ client.name }}</b>", full)
    params = render(
        build_engine,
        "telegram",
        {"chat_id": 1, "parse_mode": mode, "text": text},
        client={"name": "a_b*c <i> &"},
    )
    if mode == "MarkdownV2":
        # every MarkdownV2 special character of the value is escaped, none of the literal text
        assert params["text"].startswith("<b>a\\_b\\*c ")
        assert params["text"].endswith("</b>")
        assert "\\>" in params["text"]
    else:
        assert params["text"] == expected


@BOTH
def test_safe_values_are_not_escaped_twice(build_engine, full: bool) -> None:
    text = _wrap("{{ client.notes|safe }} {{ client.notes }} {{ client.notes|e }}", full)
    params = render(
        build_engine,
        "telegram",
        {"chat_id": 1, "parse_mode": "HTML", "text": text},
        client={"notes": "<i>x</i>"},
    )
    assert params["text"] == "<i>x</i> &lt;i&gt;x&lt;/i&gt; &lt;i&gt;x&lt;/i&gt;"


@BOTH
def test_none_renders_as_empty(build_engine, full: bool) -> None:
    text = _wrap("[{{ client.email }}][{{ client.email ~ '' }}][{{ message.text }}]", full)
    params = render(build_engine, "autoreply", {"text": text})
    assert params["text"] == "[][][]"


@BOTH
def test_values_used_in_a_plain_text_target_are_not_escaped(build_engine, full: bool) -> None:
    params = render(
        build_engine,
        "autoreply",
        {"text": _wrap("Hi {{ client.name }}!", full)},
        client={"name": "<A & B>"},
    )
    assert params["text"] == "Hi <A & B>!"


# -- truncate ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "markup",
    [
        "abcd<b>efghijklmnopqrstuvwxyz</b>",
        "ab&amp;cdefghijklmnopqrstuvwxyz",
        "abc&#8212;defghijklmnopqrstuvwxyz",
        "abcdef\\.ghijklmnopqrstuvwxyz",
        "<a href='https://example.com/very/long'>link</a> and more text here",
    ],
)
@pytest.mark.parametrize("length", range(3, 16))
def test_truncate_never_cuts_markup(markup: str, length: int) -> None:
    out = truncate_safe(Markup(markup), length, leeway=0)
    assert isinstance(out, Markup)
    body = str(out).removesuffix("...")
    assert len(body) <= length
    assert body.count("<") == body.count(">"), out  # no half tag
    if "&" in body:
        assert body.rfind(";") > body.rfind("&"), out  # no half entity
    assert not body.endswith("\\"), out  # no lone backslash


@BOTH
def test_truncate_of_plain_values_escapes_after_cutting(build_engine, full: bool) -> None:
    text = _wrap(
        "{{ client.name|truncate(6, leeway=0) }}|{{ client.notes|safe|truncate(6, leeway=0) }}",
        full,
    )
    params = render(
        build_engine,
        "telegram",
        {"chat_id": 1, "parse_mode": "HTML", "text": text},
        client={"name": "a<b>cdefghij", "notes": "a&amp;bcdefghij"},
    )
    plain, markup = params["text"].split("|")
    assert plain == "a&lt;b..."  # cut first, then escaped: never a broken entity
    assert markup == "a..."  # the entity is not cut in half


def test_truncate_keeps_short_values() -> None:
    assert truncate_safe("short", 255) == "short"
    assert truncate_safe(None, 10) == ""
    assert truncate_safe(Markup("<b>x</b>"), 255) == Markup("<b>x</b>")


# -- the sandbox ---------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize(
    "expression",
    [
        "client.__class__",
        "message.text.__class__.__mro__",
        "''.__class__",
        "client.custom.__dict__",
    ],
)
def test_underscore_attributes_are_rejected_at_load(
    build_engine, full: bool, expression: str
) -> None:
    message = load_error(build_engine, _wrap("{{ " + expression + " }}", full))
    assert "is not accessible (sandbox)" in message
    assert "rules.yaml:4" in message


@BOTH
@pytest.mark.parametrize(
    "expression",
    [
        "client.custom['__class__']",
        "client['__class__']",
        "client.custom[client.name]",
        "client|attr('__class__')",
        "client['model_fields']",
    ],
)
def test_dynamic_access_does_not_reach_python_internals(
    build_engine, full: bool, expression: str
) -> None:
    plan = plan_for(
        build_engine,
        "autoreply",
        {"text": _wrap("x{{ " + expression + " }}", full)},
        client={"name": "__class__", "custom": {"plan": "gold"}},
    )
    rendered = [a.params["text"] for a in plan]
    for text in rendered:
        assert "class" not in text and "<" not in text, text
    assert rendered == ["x"] or plan.errors


@BOTH
@pytest.mark.parametrize(
    "expression",
    [
        "message.text.format(1)",
        "message.text.center(10**9)",
        "message.text.zfill(10**9)",
        "message.text.join(['a'])",
        "'{0:>999999999}'.format(1)",
        "'{0.__class__}'.format(client)",
        "message.text.format_map(client.custom)",
    ],
)
def test_unsafe_string_methods_are_not_callable(build_engine, full: bool, expression: str) -> None:
    error = render_error(
        build_engine, _wrap("{{ " + expression + " }}", full), message={"text": "hi"}
    )
    assert "rule 't': telegram:" in error


@BOTH
@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{ 'a' * 10**7 }}", "'*' would be larger than 100000"),
        ("{{ [1] * 10**7 }}", "'*' would be larger than 100000"),
        ("{{ ['x' * 99999] * 99999 }}", "the text of a value would be larger"),
        ("{{ 10 ** (10 ** 10) }}", "'**' would make a number with more than 4000 digits"),
        ("{{ 2 ** 100000 }}", "'**' would make a number"),
        ("{{ range(10**9) }}", "range() of more than 10000 items"),
        ("{{ '%999999999s' % 'a' }}", "'%' formatting would be larger"),
        ("{{ '%*s' % (10**9, 'a') }}", "'%' formatting would be larger"),
        ("{{ '%999999999s'|format('a') }}", "'%' formatting would be larger"),
        ("{{ message.text|center(10**9) }}", "'center' would be larger"),
        ("{{ message.text|indent(10**9) }}", "'indent' would be larger"),
        ("{{ ('x' * 1000)|replace('', 'x' * 1000) }}", "'replace' would be larger"),
        ("{{ [1, 2]|slice(10**8)|list }}", "'slice' would be larger"),
        ("{{ ('x' * 99999)|list|map('center', 99999)|list|length }}", "characters and items built"),
        ("{{ ('x' * 99999)|list|map('center', 99999)|join|length }}", "join would be larger"),
        ("{{ ('x' * 99999)|list|map('replace', 'x', 'y' * 99999)|list|length }}", "built"),
        ("{{ [1]|batch(99999, 'x' * 99999)|list|string|length }}", "the text of a value"),
    ],
)
def test_work_caps_stop_expensive_templates(
    build_engine, full: bool, template: str, reason: str
) -> None:
    error = render_error(build_engine, _wrap(template, full), message={"text": "hello"})
    assert "template over its budget: " in error
    assert reason in error


@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{% for a in 'x' * 99999 %}{% for b in 'x' * 99999 %}{% endfor %}{% endfor %}",
        "{% for a in client.custom.rows %}{% for b in client.custom.rows %}"
        "{% for c in client.custom.rows %}{% endfor %}{% endfor %}{% endfor %}",
        "{% set a = 'x' * 99999 %}{% set b = a ~ a %}{{ b }}",
    ],
)
def test_loops_and_concatenation_have_a_budget(build_engine, template: str) -> None:
    error = render_error(build_engine, template, client={"custom": {"rows": list(range(1000))}})
    assert "template over its budget: " in error
    assert "steps (loop iterations" in error or "would be larger than" in error


def test_output_over_the_limit_is_not_rendered(build_engine) -> None:
    big = "{{ 'x' * 90000 }}" * 2
    for template in (big, _wrap(big, True)):
        error = render_error(build_engine, template)
        assert f"template over its budget: output larger than {MAX_OUTPUT} characters" in error


LONG_MESSAGE = "x" * 99_000  # a client's message just under one value's limit


def _webhook_config() -> str:
    return "integrations:\n  webhooks:\n    crm: {url: 'http://127.0.0.1:9/x', secret: s}\n"


@BOTH
@pytest.mark.parametrize("many", ["parameters", "actions"])
def test_a_rules_parameters_together_are_within_its_budget(
    build_engine, full: bool, many: str
) -> None:
    """Each template's output is limited; many templates repeating one long client value
    are limited together, so that no rule makes a plan (stored, sent) of any size."""
    value = _wrap("{{ message.text }}", full)
    if many == "parameters":
        body = {f"k{i}": value for i in range(50)}
        actions = f"    - webhook: {json.dumps({'to': 'crm', 'body': body})}\n"
    else:
        actions = "".join(
            f"    - slack: {json.dumps({'channel': f'#a{i}', 'text': value})}\n" for i in range(50)
        )
    rules = f"- name: t\n  on: {{channel: online-chat}}\n  do:\n{actions}"
    engine = build_engine(rules, _webhook_config())
    plan = engine.evaluate(make_event(event="message", message={"text": LONG_MESSAGE}))
    built = sum(len(json.dumps(action.json_params())) for action in plan)
    assert built <= budget.MAX_BUILT + 10_000
    assert plan.errors, "the rule must say its parameters are over its budget"
    assert "the rule's parameters would hold more than 500000 characters" in plan.errors[0]


@BOTH
@pytest.mark.parametrize("condition", [None, "message.text is defined"])
def test_every_rule_has_a_budget_of_its_own_for_its_parameters(
    build_engine, full: bool, condition: str | None
) -> None:
    """Rules decided by the index (no condition of their own evaluated) too: one rule's
    parameters never use up another's budget."""
    value = _wrap("{{ message.text }}", full)
    step = f"    - webhook: {json.dumps({'to': 'crm', 'body': {'a': value, 'b': value}})}\n"
    when = "" if condition is None else f"  if: {condition}\n"
    rules = "".join(
        f"- name: r{n}\n  on: {{channel: online-chat}}\n{when}  do:\n{step}" for n in range(4)
    )
    engine = build_engine(rules, _webhook_config())
    plan = engine.evaluate(make_event(event="message", message={"text": LONG_MESSAGE}))
    assert plan.errors == []
    assert [action.rule for action in plan] == ["r0", "r1", "r2", "r3"]


def test_small_loops_and_range_work(build_engine) -> None:
    template = "{% for i in range(3) %}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}"
    params = render(build_engine, "autoreply", {"text": template})
    assert params["text"] == "0,1,2"


def test_classes_expose_nothing() -> None:
    env = Sandbox()
    with pytest.raises(Exception, match="unsafe"):
        env.from_string("{{ dict.fromkeys(range(3), 'x') }}").render()


def test_budget_applies_to_sandbox_renders_directly() -> None:
    template = Sandbox().from_string("{% for a in x %}{% for b in x %}{% endfor %}{% endfor %}")
    with pytest.raises(TemplateError, match="steps"):
        with_budget(lambda: template.render(x="y" * 1000))


# -- load-time checks on templates ---------------------------------------------------------


@BOTH
def test_unknown_fields_in_templates_are_load_errors(build_engine, full: bool) -> None:
    message = load_error(build_engine, _wrap("Hi {{ client.emial }}", full))
    assert "client has no field 'emial' (did you mean 'email'?)" in message


def test_template_syntax_error_is_a_load_error(build_engine) -> None:
    message = load_error(build_engine, "{% if client.name %}unclosed")
    assert "syntax error" in message
    assert "rules.yaml:4: [0].do[0].telegram.text" in message


@BOTH
def test_chained_powers_follow_jinja_and_finish(build_engine, full: bool) -> None:
    # Jinja2 reads 10**10**10 as (10**10)**10: a big number, computed at once
    params = render(build_engine, "autoreply", {"text": _wrap("{{ 10**10**10 }}", full)})
    assert params["text"] == str(10**100)
