"""assign and the team: presence (only_online), capacity (max_open) and the last agent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from action_helpers import make_config, make_context, make_event
from test_assign_action import assign, seed, stored

from rulekit.actions.assign import Assign, AssignParams
from rulekit.directory import Directory
from rulekit.event import Conversation
from rulekit.store.memory import MemoryStore

SOON = datetime.now(UTC) + timedelta(hours=1)  # a connection the test will not outlive
GONE = datetime(2020, 1, 1, tzinfo=UTC)


def present(store: MemoryStore, *emails: str, until: datetime = SOON, status=None) -> None:
    with store.transaction() as state:
        for email in emails:
            state.set_presence(email, status=status, connected_until=until)


def limited(group_limit: int | None = None, **agent_limits: int):
    """The usual directory, with ``max_open`` for some agents (by first name) and support."""
    config = make_config()
    agents = [
        agent.model_copy(update={"max_open": agent_limits.get(agent.email.split("@")[0].lower())})
        for agent in config.directory.agents
    ]
    limits = {"support": group_limit} if group_limit else {}
    config.directory = Directory(agents, config.directory.groups, limits)
    return config


def test_before_anyone_signs_in_presence_is_not_asked():
    store = MemoryStore()
    result, _ = assign(AssignParams(group="support"), store)
    assert result["assigned"] == "Ann@Example.com"


def test_once_agents_sign_in_only_online_agents_are_picked():
    store = MemoryStore()
    present(store, "cara@example.com")
    present(store, "ann@example.com", until=GONE)  # her page closed long ago
    present(store, "eve@example.com", status="away")
    picks = [
        assign(AssignParams(group="support"), store, make_event(conversation={"id": f"c{n}"}))[0]
        for n in range(3)
    ]
    assert [p["assigned"] for p in picks] == ["Cara@example.COM"] * 3
    # only_online: false picks among everyone, as before the console was used
    result, _ = assign(
        AssignParams(group="support", only_online=False),
        store,
        make_event(conversation={"id": "x"}),
    )
    assert result["assigned"] in ("Ann@Example.com", "eve@example.com")


def test_nobody_online_leaves_the_conversation_in_the_group_with_the_reason():
    store = MemoryStore()
    seed(store, "chatra-client-1", "conv-1", assignee="ann@example.com", group="sales")
    present(store, "ann@example.com", until=GONE)
    result, emitted = assign(AssignParams(group="support"), store)
    assert result["assigned"] is None and result["changed"] is True
    assert result["reason"] == (
        "no agent of group 'support' with access to channel 'online-chat' is online (only_online)"
    )
    _, conversation = stored(store)
    assert (conversation.assignee, conversation.group) == (None, "support")
    assert [e.event for e in emitted] == ["updated"]  # no ``assigned`` for nobody
    # when_nobody: leave changes nothing
    seed(store, "chatra-client-1", "conv-1", assignee="ann@example.com", group="sales")
    result, emitted = assign(AssignParams(group="support", when_nobody="leave"), store)
    assert (
        result
        == {
            "assigned": None,
            "group": "support",
            "reason": result["reason"],
        }
        and emitted == []
    )
    assert stored(store)[1].assignee == "ann@example.com"


def test_agents_at_capacity_are_skipped_and_the_agents_own_limit_wins():
    store = MemoryStore()
    seed(store, "k1", "c1", assignee="ann@example.com")
    seed(store, "k2", "c2", assignee="cara@example.com")
    seed(store, "k3", "c3", assignee="cara@example.com")
    # support: 1 each; Cara's own limit (3) wins over the group's
    config = limited(group_limit=1, cara=3)
    for strategy in ("round_robin", "least_open"):
        picks = []
        for n in range(3):
            event = make_event(conversation={"id": f"{strategy}-{n}"})
            result, _ = assign(
                AssignParams(group="support", strategy=strategy), store, event, config
            )
            picks.append(result["assigned"])
        if strategy == "round_robin":  # Ann is full: Cara (2 of 3), eve (0 of 1), then Cara
            assert picks == ["Cara@example.COM", "eve@example.com", None]
        else:  # everyone is full now
            assert picks == [None, None, None]
    assert result["reason"] == (
        "every agent of group 'support' who could take it is at capacity (max_open)"
    )


def test_max_open_zero_keeps_an_agent_out_of_strategies_but_not_out_of_explicit_picks(tmp_path):
    from rulekit.config import load_config
    from rulekit.plugins import load_plugins

    config = tmp_path / "rulekit.yaml"
    config.write_text(
        "groups:\n  support: {max_open: 0}\n  sales: {}\n"
        "agents:\n"
        "  - {email: lead@example.com, groups: [support], channels: [online-chat]}\n"
        "  - {email: ann@example.com, groups: [support], channels: [online-chat], max_open: 2}\n"
        "  - {email: bob@example.com, groups: [sales], channels: [online-chat], max_open: 0}\n"
    )
    directory = load_config(config, load_plugins()).directory
    lead, ann, bob = directory.agents
    assert [directory.max_open(a, "support") for a in (lead, ann)] == [0, 2]
    assert directory.max_open(bob, "sales") == 0
    store = MemoryStore()
    make = make_config()
    make.directory = Directory(
        [a.model_copy(update={"channels": ["online-chat"]}) for a in directory.agents],
        directory.groups,
        directory.group_limits,
    )
    picks = [
        assign(
            AssignParams(group="support", strategy=strategy),
            store,
            make_event(conversation={"id": f"{strategy}{n}"}),
            make,
        )[0]["assigned"]
        for strategy in ("round_robin", "least_open")
        for n in range(2)
    ]
    assert picks == ["ann@example.com", "ann@example.com", None, None]  # the lead never
    result, _ = assign(AssignParams(group="sales"), store, config=make)
    assert result["assigned"] is None and "at capacity (max_open)" in result["reason"]
    result, _ = assign(AssignParams(agent="bob@example.com"), store, config=make)
    assert result["assigned"] == "bob@example.com"  # named: capacity is for strategies


def test_the_conversation_being_reassigned_does_not_count_against_its_agent():
    store = MemoryStore()
    seed(store, "chatra-client-1", "conv-1", assignee="ann@example.com", group="support")
    config = limited(ann=1, cara=1, eve=1)
    result, _ = assign(AssignParams(strategy="least_open"), store, config=config)
    assert result["assigned"] == "Ann@Example.com"


def seed_without_status(store: MemoryStore, key: str, conversation_id: str, assignee: str):
    """A conversation of a channel that reports no status (a generic webhook's)."""
    with store.transaction() as state:
        conversation = Conversation(id=conversation_id, assignee=assignee)
        state.save_conversation("online-chat", key, conversation)


@pytest.mark.parametrize("strategy", ["round_robin", "least_open"])
def test_a_conversation_without_a_status_counts_as_open_until_closed(strategy):
    """The store's count and the reassignment's discount agree: a conversation with no status
    counts against its agent's max_open, so a new one goes to someone with room."""
    store = MemoryStore()
    seed_without_status(store, "k1", "c1", "ann@example.com")
    seed_without_status(store, "k2", "c2", "cara@example.com")
    config = limited(ann=1, cara=1, eve=1)
    with store.transaction() as state:
        assert state.open_conversations_by_assignee() == {
            "ann@example.com": 1,
            "cara@example.com": 1,
        }
    event = make_event(conversation={"id": "c9"})
    result, _ = assign(AssignParams(group="support", strategy=strategy), store, event, config)
    assert result["assigned"] == "eve@example.com"
    # closed, it no longer counts
    with store.transaction() as state:
        closed = Conversation(id="c1", assignee="ann@example.com", status="closed")
        state.save_conversation("online-chat", "k1", closed)
        assert state.open_conversations_by_assignee() == {
            "cara@example.com": 1,
            "eve@example.com": 1,
        }


def test_reassigning_a_conversation_without_a_status_respects_its_agents_other_ones():
    """The conversation being reassigned is discounted once: Ann, at her max_open with it and
    another one, is not picked again as if she had room."""
    store = MemoryStore()
    seed_without_status(store, "k1", "c1", "ann@example.com")
    seed(store, "k2", "c2", assignee="ann@example.com")
    config = limited(ann=1)
    event = make_event(conversation={"id": "c1", "assignee": "ann@example.com", "status": None})
    result, _ = assign(AssignParams(group="support", strategy="least_open"), store, event, config)
    assert result["assigned"] == "Cara@example.COM"


def test_last_agent_picks_who_last_answered_else_the_fallback():
    store = MemoryStore()
    seed(store, "chatra-client-1", "conv-1", group="support", last_agent="EVE@example.com")
    params = AssignParams(strategy="last_agent", fallback="least_open")
    result, _ = assign(params, store)
    assert (result["assigned"], result["strategy"]) == ("eve@example.com", "last_agent")
    # eve is away now: the fallback picks, and the result says so
    present(store, "eve@example.com", status="away")
    present(store, "cara@example.com", "ann@example.com")
    seed(store, "chatra-client-1", "conv-1", group="support", last_agent="eve@example.com")
    result, _ = assign(params, store)
    assert result["assigned"] == "Ann@Example.com"
    assert result["strategy"] == "least_open (fallback)"


def test_a_dry_run_says_when_nobody_of_the_simulated_team_is_online():
    config = make_config()
    action = Assign()
    params = AssignParams(group="support")
    context = make_context(config=config, online=frozenset({"dan@example.com"}))
    assert action.would_fail(params, context) == (
        "no agent of group 'support' with access to channel 'online-chat' is online "
        "(only_online): the conversation waits in group 'support', unassigned"
    )
    assert action.would_fail(params, make_context(online=frozenset({"eve@example.com"}))) is None
    assert action.would_fail(params, make_context()) is None  # everyone online
    describe = action.describe(AssignParams(strategy="last_agent"), make_context())
    assert describe.endswith("(last_agent, else round_robin)")


@pytest.mark.parametrize(
    ("limits", "reassigned"),
    [
        ({"group_limit": 1}, None),  # everyone of support is full
        ({"group_limit": 1, "cara": 3}, None),  # Cara's own limit leaves her room
        ({"group_limit": 1}, "ann@example.com"),  # the chat is Ann's: it does not count
        ({"ann": 1, "cara": 2, "eve": 0}, None),
        ({}, None),  # no limits
    ],
)
def test_a_dry_run_predicts_capacity_as_the_daemon_decides_it(limits, reassigned):
    """The same open counts: the dry run says it would fail exactly when the daemon's pick
    finds everyone at capacity, with the daemon's reason."""
    store = MemoryStore()
    seed(store, "k1", "c1", assignee="ann@example.com")
    seed(store, "k2", "c2", assignee="cara@example.com")
    seed(store, "k3", "c3", assignee="eve@example.com")
    conversation = {"id": "c1", "assignee": reassigned} if reassigned else {"id": "c9"}
    event = make_event(conversation=conversation)
    config = limited(**limits)
    with store.transaction() as state:
        counts = state.open_conversations_by_assignee()
    for strategy in ("round_robin", "least_open", "last_agent"):
        params = AssignParams(group="support", strategy=strategy)
        context = make_context(event=event, config=config, open_counts=counts)
        predicted = Assign().would_fail(params, context)
        result, _ = assign(params, store, event, config)
        if result["assigned"] is None:
            assert (
                predicted
                == f"{result['reason']}: the conversation waits in group 'support', unassigned"
            )
        else:
            assert predicted is None
        if result.get("changed"):  # put the chat back as it was for the next strategy
            seed(store, "k1" if reassigned else "c9", conversation["id"], assignee=reassigned)


def test_the_last_agent_is_kept_from_the_conversations_replies():
    from rulekit.runtime.replies import note_replies

    store = MemoryStore()
    seed(store, "chatra-client-1", "conv-1", group="support")
    reply = make_event(
        event="agent_replied",
        agent={"email": "eve@example.com"},
        message={"id": "m2", "text": "on it", "author": "agent", "agent": "eve@example.com"},
    )
    client = make_event(event="message")
    with store.transaction() as state:
        note_replies(state, reply)
        note_replies(state, client)  # the client writing again keeps who answered last
    assert client.conversation.last_agent == "eve@example.com"
    assert stored(store)[1].last_agent == "eve@example.com"
    # a reply from the console is an answer too; rulekit's own (an autoreply) is not
    console = make_event(event="agent_replied", origin="console", agent={"email": "ann@x.io"})
    own = make_event(event="agent_replied", origin="rulekit", agent={"email": "bot@x.io"})
    with store.transaction() as state:
        note_replies(state, console)
        note_replies(state, own)
    assert stored(store)[1].last_agent == "ann@x.io"


def test_the_schema_offers_the_new_keys():
    from rulekit.plugins import load_plugins
    from rulekit.rules.schema import rules_schema

    params = rules_schema(load_plugins())["$defs"]["params_assign"]["properties"]
    assert "last_agent" in params["strategy"]["enum"]
    assert {"only_online", "fallback", "when_nobody"} <= set(params)


def test_check_warns_when_only_online_can_never_find_anyone():
    config = make_config()
    params = AssignParams(group="support", only_online=True)
    assert Assign.lint_on(params, ["online-chat"], config) == [
        "no agent of group 'support' with access to channel 'online-chat' can sign in to the "
        "console (token_sha256): only_online: true will pick nobody"
    ]
    assert Assign.lint_on(AssignParams(group="support"), ["online-chat"], config) == []


def test_an_agent_a_reload_removed_is_no_sign_that_anyone_signed_in():
    """Presence follows the current directory: the only agent who ever signed in is gone from
    the config, so only_online stays false by default and everyone may be picked."""
    store = MemoryStore()
    present(store, "gone@example.com")  # online, but no longer in the directory
    result, _ = assign(AssignParams(group="support"), store)
    assert result["assigned"] == "Ann@Example.com"
    # once an agent of the directory signed in, presence counts: only Cara is online
    present(store, "cara@example.com")
    result, _ = assign(AssignParams(group="support"), store, make_event(conversation={"id": "x"}))
    assert result["assigned"] == "Cara@example.COM"


def test_team_reads_presence_of_the_current_directory_only():
    from rulekit.team import Team, TeamFacts

    directory = make_config().directory
    removed = TeamFacts.of({"gone@example.com": "online"}, {})
    team = Team(removed, directory, "online-chat")
    assert team.tracked is False  # as assign: nobody of the directory ever signed in
    assert team.online == [agent.email.lower() for agent in directory.eligible("online-chat")]
    mixed = TeamFacts.of({"gone@example.com": "online", "cara@example.com": "online"}, {})
    team = Team(mixed, directory, "online-chat")
    assert team.tracked is True and team.online == ["cara@example.com"]
    # a dry run's online: list is taken as said, whoever it names
    stated = TeamFacts.simulated(frozenset({"someone.else@example.com"}), {})
    team = Team(stated, directory, "online-chat")
    assert team.tracked is True and team.online == []
