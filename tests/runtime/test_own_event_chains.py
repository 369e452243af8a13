"""Rules that react to rulekit's own events (``allow_own_events``) and answer each other's
changes: one adds a tag on every ``updated``, the other removes it. Each change is an event
that fires the other rule, for ever: the daemon recorded about 200 events a second, each id
longer than the last (37 KB after 20 s, so the store grew with the square of the time). The
chain now ends after :data:`~rulekit.event.MAX_OWN_CHAIN` events: no rule reacts to the last,
which says why, and the daemon goes on with other conversations."""

from __future__ import annotations

import json

import httpx
from click.testing import CliRunner
from daemons import chat_started, read, wait_for, write_setup

from rulekit.cli.main import cli
from rulekit.event import MAX_OWN_CHAIN, MAX_OWN_EVENTS, own_chain, own_root

FLIP_FLOP = """\
- name: Add
  on: {channel: online-chat, event: [created, updated]}
  allow_own_events: true
  if: '"x" not in conversation.tags'
  do:
    - tag: {add: [x]}
- name: Remove
  on: {channel: online-chat, event: updated}
  allow_own_events: true
  if: '"x" in conversation.tags'
  do:
    - tag: {remove: [x]}
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello"}
"""


def _ended(record) -> bool:
    return any("ends a chain of" in error for error in record.trace.get("errors", []))


def test_rules_answering_each_others_changes_stop_after_the_longest_chain(
    tmp_path, serve, chatra
) -> None:
    config = write_setup(tmp_path, FLIP_FLOP, chatra=chatra)
    daemon = serve(config)
    assert httpx.post(daemon.webhook_url, content=chat_started(1)).status_code == 200
    ended = wait_for(
        lambda: [r for r in read(tmp_path, lambda s: s.history(limit=1000)) if _ended(r)],
        timeout=60,
    )
    # nothing is left that could make another event: the chain is over
    wait_for(lambda: read(tmp_path, lambda s: s.jobs(status="pending", limit=10)) == [])
    events = read(tmp_path, lambda s: s.history(limit=1000))
    depths = [own_chain(event.event_id) for event in events]
    assert max(depths) == MAX_OWN_CHAIN and len(events) < 4 * MAX_OWN_CHAIN, depths
    assert {own_chain(event.event_id) for event in ended} == {MAX_OWN_CHAIN}
    for last in ended:
        assert len(last.event_id) < 1000
        assert not last.trace.get("matched"), last.trace
        reasons = {rule["reason"] for rule in last.trace["rules"] if not rule.get("matched")}
        assert any("end of a chain" in (reason or "") for reason in reasons), last.trace
    # the daemon goes on: another conversation is answered
    assert httpx.post(daemon.webhook_url, content=chat_started(2)).status_code == 200
    wait_for(lambda: {m["clientId"] for m in chatra.sent} == {"client00000001", "client00000002"})


def test_the_dry_run_ends_the_chain_where_the_daemon_does(tmp_path) -> None:
    config = write_setup(tmp_path, FLIP_FLOP)
    sample = tmp_path / "started.json"
    sample.write_text(json.dumps(json.loads(chat_started(1))))
    result = CliRunner().invoke(
        cli, ["test", str(sample), "--channel", "online-chat", "--config", str(config)]
    )
    assert f"ends a chain of {MAX_OWN_CHAIN}" in result.output, result.output
    assert "the simulation stops there" not in result.output, result.output


BRANCHING = """\
- name: Grow
  on: {channel: online-chat, event: [created, updated]}
  allow_own_events: true
  do:
    - set:
        fields:
          a: >-
            {{ (conversation.fields.a or 0)|int + (conversation.fields.b or 0)|int + 1 }}
    - set:
        fields:
          b: >-
            {{ (conversation.fields.a or 0)|int + (conversation.fields.b or 0)|int + 2 }}
"""
"""Each event's plan changes the conversation twice: two events, each of which makes two
more. Chains end after 8, but the tree under one webhook held 2 + 4 + ... + 2^8 = 510 events
(3^8 = 9,841 with three such steps): the daemon spent seconds of work per webhook."""


def _over_budget(record) -> bool:
    return any(f"more than {MAX_OWN_EVENTS} events" in e for e in record.trace.get("errors", []))


def test_own_events_branching_under_one_webhook_stop_at_their_budget(
    tmp_path, serve, chatra
) -> None:
    config = write_setup(tmp_path, BRANCHING, chatra=chatra)
    daemon = serve(config)
    assert httpx.post(daemon.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(
        lambda: [r for r in read(tmp_path, lambda s: s.history(limit=2000)) if _over_budget(r)],
        timeout=60,
    )
    wait_for(lambda: read(tmp_path, lambda s: s.jobs(status="pending", limit=10)) == [])
    events = read(tmp_path, lambda s: s.history(limit=2000))
    own = [e for e in events if own_chain(e.event_id) > 0]
    evaluated = [e for e in own if not _over_budget(e)]
    assert len(evaluated) == MAX_OWN_EVENTS, len(evaluated)
    # each event past the budget was recorded, its plan empty, and it made no event of its own
    refused = [e for e in own if _over_budget(e)]
    assert refused and all(not e.trace.get("matched") for e in refused)
    assert len(own) <= 2 + 2 * MAX_OWN_EVENTS  # two of each evaluated event at most
    outside = {e.event_id for e in events if own_chain(e.event_id) == 0}
    assert {own_root(e.event_id) for e in own} <= outside


def test_the_dry_run_stops_branching_own_events_where_the_daemon_does(tmp_path) -> None:
    config = write_setup(tmp_path, BRANCHING)
    sample = tmp_path / "started.json"
    sample.write_text(json.dumps(json.loads(chat_started(1))))
    result = CliRunner().invoke(
        cli,
        [
            "test",
            str(sample),
            "--channel",
            "online-chat",
            "--config",
            str(config),
            "--format",
            "json",
        ],
    )
    assert result.exit_code in (0, 1), result.output
    events = json.loads(result.output)["results"][0]["events"]
    own = [e for e in events if e["event"]["origin"] == "rulekit"]
    past = [e for e in own if any(f"more than {MAX_OWN_EVENTS} events" in x for x in e["errors"])]
    assert past and all(not e["actions"] for e in past)
    assert len(own) - len(past) == MAX_OWN_EVENTS
