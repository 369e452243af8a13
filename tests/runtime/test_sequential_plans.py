"""A plan is a sequence in the daemon too: an ``autoreply`` is sent as the agent an earlier
``assign`` of its plan set, and with none, as the channel's default sender (SQLite and
PostgreSQL, the fake Chatra)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup

SEED_ORDER = """\
- name: Greet new chats
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hi there"}
    - assign: {group: support, strategy: round_robin}
    - autoreply: {text: "Anna here"}
"""


def setup(folder: Path, chatra, storage: str | None) -> Path:
    config = write_setup(folder, SEED_ORDER, chatra=chatra)
    text = config.read_text().replace(
        "    default_agent_id: agent0001\n",
        "    default_agent: {email: bot@shop.example, name: Shop Bot}\n",
    )
    if storage is not None:
        text = text.replace("storage: sqlite:///rulekit.sqlite3", f"storage: {storage}")
    config.write_text(text)
    return config


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


def test_each_reply_is_sent_as_the_plan_left_the_conversation(tmp_path, serve, chatra, storage):
    server = serve(setup(tmp_path, chatra, storage))
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    first, second = wait_for(lambda: len(chatra.sent) == 2 and chatra.sent)
    # before the assign: the default sender; after it: the agent it picked
    assert (first["text"], first["agentEmail"], first["agentName"]) == (
        "Hi there",
        "bot@shop.example",
        "Shop Bot",
    )
    assert first["receivedFrom"] == "rulekit"
    assert (second["text"], second["agentEmail"]) == ("Anna here", "anna@example.com")
    with server.daemon.store.transaction() as state:
        _, conversation = state.find_conversation("online-chat", "online-chat:client00000001")
    assert conversation.assignee == "anna@example.com"


def test_the_dry_run_says_when_there_is_no_agent_to_send_as(tmp_path, chatra) -> None:
    from rulekit.audit.dryrun import as_text, run_input
    from rulekit.engine.engine import Engine
    from rulekit.runtime.pipeline import Pipeline
    from rulekit.store.memory import MemoryStore

    config = setup(tmp_path, chatra, None)
    body = tmp_path / "chat.json"
    body.write_bytes(chat_started(1))

    def dry_run(config_text: str) -> str:
        config.write_text(config_text)
        engine = Engine.from_path(tmp_path / "rules.d", config)
        pipeline = Pipeline(engine, MemoryStore())
        return as_text(pipeline, [run_input(pipeline, body, "online-chat", None)])

    with_default = dry_run(config.read_text())
    assert "as bot@shop.example: 'Hi there'" in with_default
    assert "as the agent an earlier assign picks: 'Anna here'" in with_default
    assert "would fail" not in with_default
    without = dry_run(
        config.read_text().replace(
            "    default_agent: {email: bot@shop.example, name: Shop Bot}\n", ""
        )
    )
    # only the reply before the assign fails
    assert without.count("would fail: no agent to send as") == 1
    before, after = without.split("would fail: no agent to send as")
    assert "'Hi there'" in before and "'Anna here'" in after


FAILING_STEP = """\
- name: Tier
  on: {channel: online-chat, event: created}
  do:
    - tag: {add: ["{{ 'gold' }}"]}
    - autoreply: {text: "tags: {{ conversation.tags|join(',') or 'none' }}"}
    - tag: {add: [vip]}
"""


def test_a_step_that_fails_for_good_leaves_the_later_ones_to_run(tmp_path, serve, chatra):
    """The first tag names a tag the config does not list: its job is dead-lettered, and the
    later steps run all the same, in order (the reply, then the second tag), as rulekit test
    says they would."""
    from rulekit.audit.dryrun import as_text, run_input
    from rulekit.engine.engine import Engine
    from rulekit.runtime.pipeline import Pipeline
    from rulekit.store.memory import MemoryStore

    config = write_setup(tmp_path, FAILING_STEP, chatra=chatra, extra="tags: [vip]\n")
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    store = server.daemon.store

    def settled() -> list:
        with store.transaction() as state:
            jobs = state.jobs(limit=10)
        done = len(jobs) == 3 and all(j.status != "pending" for j in jobs)
        return sorted(jobs, key=lambda j: j.id) if done else []

    jobs = wait_for(settled, timeout=30)
    assert [(j.action, j.status) for j in jobs] == [
        ("tag", "dead"),
        ("autoreply", "done"),
        ("tag", "done"),
    ]
    assert "unknown tag 'gold'" in (jobs[0].last_error or "")
    assert [m["text"] for m in chatra.sent] == ["tags: none"]
    with store.transaction() as state:
        _, conversation = state.find_conversation("online-chat", "online-chat:client00000001")
    assert conversation.tags == ["vip"]
    # the dry run says the same
    body = tmp_path / "chat.json"
    body.write_bytes(chat_started(1))
    pipeline = Pipeline(Engine.from_path(tmp_path / "rules.d", config), MemoryStore())
    text = as_text(pipeline, [run_input(pipeline, body, "online-chat", None)])
    assert "would fail: unknown tag 'gold' (config: tags)" in text
    assert "'tags: none'" in text
