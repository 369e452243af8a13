"""``rulekit replay`` reads the recorded events a page at a time and keeps of each trace only
what it reads (the team the rules saw, a timer's firing): a replay of 100,000 events held
every whole trace at once, over a gigabyte. The report is the same whatever the page."""

from __future__ import annotations

import pytest
from audit_site import build_busy_site
from scaffold import write

from rulekit.audit import replay
from rulekit.engine.engine import Engine
from rulekit.store.sqlite import SQLiteStore

CANDIDATE = """
- name: Refunds to Slack
  on: {channel: online-chat, event: message}
  if: "'refund' in message.text|lower"
  do:
    - slack: {channel: "#refunds", text: "Refund: {{ message.text }}"}
"""


def replayed(site, limit: int):
    engine = Engine.from_path(write(site.root / "candidate" / "rules.yaml", CANDIDATE), site.config)
    store = SQLiteStore(site.database, upgrade=False, writes=False)
    try:
        with store.reading() as state:
            return replay.replay(state, engine, limit=limit)
    finally:
        store.close()


@pytest.mark.parametrize("limit", [1, 7, 11, 100])
def test_pages_replay_what_one_read_replays(tmp_path, monkeypatch, limit):
    site = build_busy_site(tmp_path, 11)
    whole = replay.as_document(replayed(site, limit), show_all=True)
    monkeypatch.setattr(replay, "PAGE", 3)
    report = replayed(site, limit)
    assert replay.as_document(report, show_all=True) == whole
    assert len(report.changes) == min(limit, 11)
    assert sum(len(c.changed) for c in report.changes) == sum(
        1 for c in report.changes if int(c.record.event_id[-2:]) % 2
    )
    for change in report.changes:
        assert set(change.record.trace) <= {"team", "timer"}, change.record.trace.keys()


def test_events_that_would_not_change_are_only_counted_unless_listed(tmp_path, monkeypatch):
    site = build_busy_site(tmp_path, 11)
    monkeypatch.setattr(replay, "PAGE", 4)
    engine = Engine.from_path(write(site.root / "candidate" / "rules.yaml", CANDIDATE), site.config)
    store = SQLiteStore(site.database, upgrade=False, writes=False)
    try:
        with store.reading() as state:
            whole = replay.replay(state, engine)
            counted = replay.replay(state, engine, keep_unchanged=False)
    finally:
        store.close()
    assert counted.summary() == whole.summary()
    assert replay.as_document(counted) == replay.as_document(whole)
    assert replay.as_text(counted) == replay.as_text(whole)
    kept = [c for c in counted.changes if c.differs]
    assert kept and all(c.record.data for c in kept)
    assert all(c.record.data == {} for c in counted.changes if not c.differs)


def test_the_command_lists_what_it_kept(tmp_path):
    site = build_busy_site(tmp_path, 5)
    candidate = str(write(site.root / "candidate" / "rules.yaml", CANDIDATE).parent)
    changed = site.run("replay", "--rules", candidate)
    assert changed.exit_code == 0, changed.output
    assert "chatra:message:m-03" in changed.output and "chatra:message:m-02" not in changed.output
    listed = site.run("replay", "--rules", candidate, "--all")
    assert "chatra:message:m-02" in listed.output
