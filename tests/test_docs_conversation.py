"""The examples of docs/rules.md about rules that shape the conversation do what the text says."""

from __future__ import annotations

from scaffold import REPO, make_event

from rulekit.runtime.pipeline import Pipeline
from rulekit.store.memory import MemoryStore

CONFIG = """
channels:
  online-chat:
    provider: chatra
    public_key: pub
    secret_key: sec
    default_group: support
    default_agent: {email: support@shop.example.com, name: Shop Support}
groups: [support]
agents:
  - {email: anna@shop.example.com, name: Anna, groups: [support], channels: [online-chat]}
"""


def section(heading: str) -> str:
    text = (REPO / "docs" / "rules.md").read_text(encoding="utf-8")
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    return text[start : end if end != -1 else len(text)]


def blocks(heading: str, kind: str = "yaml") -> list[str]:
    return [b.split("```", 1)[0] for b in section(heading).split(f"```{kind}\n")[1:]]


def test_a_plan_is_a_sequence_example(build_engine) -> None:
    [rules] = blocks("### A plan is a sequence")
    engine = build_engine(rules, CONFIG)
    event = make_event(
        conversation={"id": "online-chat:c1"},
        client={"id": "c1", "custom": {"plan": "enterprise"}},
        message={"text": "hi", "author": "client"},
    )
    plan = engine.evaluate(event)
    assert [(a.rule, a.action) for a in plan] == [
        ("Route VIP chats", "autoreply"),
        ("Route VIP chats", "assign"),
        ("Route VIP chats", "autoreply"),
        ("Anna's chats ring", "play_sound"),
    ]
    assert plan[2].params["text"] == "Anna here, anna@shop.example.com is looking at it."
    pipeline = Pipeline(engine, MemoryStore())
    first, _ = pipeline.describe(event, plan[0])
    second, _ = pipeline.describe(event, plan[2])
    assert "as support@shop.example.com" in first  # the default sender
    assert "as anna@shop.example.com" in second
    assert pipeline.describe(event, plan[3])[0].endswith("(anna@shop.example.com)")


def test_tags_priority_and_fields_example(build_engine) -> None:
    [rules] = blocks("### Tags, priority and fields")
    config = CONFIG + "integrations:\n  slack: {token: x}\n  telegram: {token: '1:x'}\n"
    engine = build_engine(rules, config)
    created = make_event(
        conversation={"id": "online-chat:c1", "tags": ["new"]},
        client={"id": "c1", "custom": {"plan": "enterprise"}},
        message={"text": "hi", "author": "client"},
    )
    tag, set_, slack = engine.evaluate(created)
    assert (tag.action, set_.action, slack.action) == ("tag", "set", "slack")
    assert set_.params["fields"] == {"plan": "enterprise"}
    assert slack.params["text"] == "vip chat, priority high"  # as the text says
    # the change as the daemon makes it: one updated event, which the second rule reads
    from rulekit.actions.conversation import changes, updated_event

    after = set_.seen.conversation.model_copy(update={"priority": "high"})
    updated = updated_event(created, after, changes(set_.seen.conversation, after))
    [page] = engine.evaluate(updated)
    assert page.params["text"] == "VIP chat is now high (was none)"
    # without allow_own_events the rule would not see it; an agent's change (console) it would
    plan = engine.evaluate(updated.model_copy(update={"origin": "console"}))
    assert [a.action for a in plan] == ["telegram"]


def test_configuration_tags_and_fields_example(tmp_path, build_engine) -> None:
    from rulekit.errors import ValidationErrors

    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    start = text.index("## Tags and fields")
    block = text[start:].split("```yaml\n", 1)[1].split("```", 1)[0]
    engine = build_engine(
        "- {name: r, on: {event: created}, do: [{tag: {add: [vip]}}, {set: {fields: {plan: x}}}]}",
        CONFIG + block,
    )
    assert engine.config.raw.tags == ["vip", "billing", "new", "spam"]
    try:
        build_engine("- {name: r, do: [{tag: {add: [vipp]}}]}", CONFIG + block)
    except ValidationErrors as exc:
        assert "unknown tag 'vipp' (did you mean 'vip'?)" in str(exc)
    else:
        raise AssertionError("an unknown tag loaded")


def test_the_schema_covers_the_conversation_actions_and_the_updated_event() -> None:
    import json

    from rulekit.plugins import load_plugins
    from rulekit.rules.schema import rules_schema

    schema = json.loads(json.dumps(rules_schema(load_plugins(entry_points=False))))
    defs = schema["$defs"]
    assert set(defs["params_tag"]["properties"]) == {"add", "remove"}
    assert set(defs["params_set"]["properties"]) == {"priority", "fields"}
    assert "updated" in json.dumps(defs["rule"])
    assert "urgent" in json.dumps(defs["params_set"])
