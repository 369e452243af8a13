"""The audit commands show what the rules read of ``team`` (the agents' emails: they are for
admins), but a client's email that a rule passed to ``team.open_count()`` is the client's data:
hidden without ``--show-content``, in ``why`` and ``history``, text and JSON."""

from __future__ import annotations

from datetime import timedelta

from audit_site import T0

from rulekit.event import Event
from rulekit.store.sqlite import SQLiteStore

EMAIL = "Kim.Lee@Example.org"
AGENT = "anna@example.com"


def add_event(site) -> None:
    event = Event(
        id="chatra:created:kim-1",
        channel="online-chat",
        event="created",
        occurred_at=T0,
        conversation={"id": "conv-kim", "status": "open"},
        client={"id": "c-kim", "display_name": "Kim L.", "email": EMAIL},
        message={"id": "k1", "text": "hello", "author": "client"},
    )
    team = {"tracked": True, "online": [AGENT], "open": {EMAIL.lower(): 3, AGENT: 1}}
    store = SQLiteStore(site.database)
    try:
        with store.transaction() as state:
            state.record_event(
                event, inbox_id=None, trace={"team": team}, jobs=[], now=T0 + timedelta(seconds=1)
            )
    finally:
        store.close()


def test_a_clients_email_the_rules_read_of_the_team_is_hidden(site):
    add_event(site)
    commands = [
        ["why", "chatra:created:kim-1"],
        ["why", "chatra:created:kim-1", "--format", "json"],
        ["history", "--event", "created"],
        ["history", "--event", "created", "--format", "json"],
    ]
    for command in commands:
        hidden = site.run(*command)
        assert hidden.exit_code == 0, hidden.output
        assert EMAIL.casefold() not in hidden.output.casefold(), (command, hidden.output)
        assert "[hidden]" in hidden.output and AGENT in hidden.output, (command, hidden.output)
        shown = site.run(*command, "--show-content").output
        assert EMAIL.lower() in shown.casefold(), (command, shown)  # the test can fail
    why = site.run("why", "chatra:created:kim-1").output
    assert "open conversations of [hidden]: 3" in why
    assert f"open conversations of {AGENT}: 1" in why
