"""A number in an action's parameters that is not finite (YAML's ``.nan``, ``.inf``, a float
too large such as ``1.0e+400``) is a load error at its line: no JSON holds it, so every event
the rule fired on was set aside when its job could not be stored (``Out of range float values
are not JSON compliant``), the rule's other actions lost with it."""

from __future__ import annotations

import pytest

from rulekit.errors import ValidationErrors

RULES = """\
- name: Not a number
  on: {channel: online-chat, event: message}
  do:
    - set: {fields: {score: VALUE}}
    - webhook: {to: crm, body: {scores: [1, VALUE], plain: 2.5}}
"""


@pytest.mark.parametrize("value", [".nan", ".inf", "-.Inf", "1.0e+400"])
def test_a_number_that_is_not_finite_is_a_load_error_at_its_line(build_engine, value) -> None:
    with pytest.raises(ValidationErrors) as caught:
        build_engine(RULES.replace("VALUE", value))
    message = str(caught.value)
    assert "rules.yaml:4: [0].do[0].set.fields.score: a number must be finite" in message
    assert "rules.yaml:5: [0].do[1].webhook.body.scores[1]: a number must be finite" in message


def test_finite_numbers_load(build_engine) -> None:
    config = "channels:\n  online-chat: {provider: webhook}\n"
    config += "integrations:\n  webhooks: {crm: {url: 'https://crm.example/in', secret: s}}\n"
    engine = build_engine(RULES.replace("VALUE", "1.0e+300"), config)
    assert [rule.name for rule in engine.rules] == ["Not a number"]
