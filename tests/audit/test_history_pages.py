"""``rulekit history`` reads and prints a long listing a page at a time (a page of records in
memory, never the whole store's: ``--limit 100000`` held every record with its trace, over a
gigabyte), each page in a short read of its own; the listing is the same as read at once."""

from __future__ import annotations

import json

import pytest
from audit_site import Site, build_busy_site

from rulekit.audit import history
from rulekit.store.sqlite import SQLiteStore

COUNT = 23


@pytest.fixture
def busy(tmp_path) -> Site:
    return build_busy_site(tmp_path, COUNT)


NEWEST_FIRST = [f"chatra:message:m-{n:02d}" for n in reversed(range(COUNT))]


@pytest.mark.parametrize("page", [1, 5, 22, 23, 500])
@pytest.mark.parametrize("limit", [1, 10, 23, 100])
def test_pages_list_what_one_read_lists(busy, page, limit):
    store = SQLiteStore(busy.database, upgrade=False, writes=False)
    try:
        pages = list(history.history_pages(store, limit=limit, page=page))
        with store.reading() as state:
            whole = history.history(state, limit=limit)
    finally:
        store.close()
    assert all(len(one) <= page for one in pages)
    listed = [line.record.event_id for one in pages for line in one]
    assert listed == [line.record.event_id for line in whole] == NEWEST_FIRST[:limit]
    assert [[j.id for j in line.jobs] for one in pages for line in one] == [
        [j.id for j in line.jobs] for line in whole
    ]


def test_filters_hold_across_pages(busy):
    store = SQLiteStore(busy.database, upgrade=False, writes=False)
    try:
        pages = list(history.history_pages(store, rule="Refunds to Slack", limit=100, page=4))
    finally:
        store.close()
    listed = [line.record.event_id for one in pages for line in one]
    assert listed == [i for i in NEWEST_FIRST if int(i[-2:]) % 2]
    assert [len(one) for one in pages] == [4, 4, 3]


def test_the_command_prints_every_page(busy, monkeypatch):
    monkeypatch.setattr(history, "PAGE", 4)
    as_json = busy.run("history", "--limit", "100", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    assert [e["event_id"] for e in json.loads(as_json.output)["events"]] == NEWEST_FIRST
    as_text = busy.run("history", "--limit", "100")
    assert [line.split()[2] for line in as_text.output.splitlines()] == NEWEST_FIRST
    empty = busy.run("history", "--channel", "nowhere", "--format", "json")
    assert json.loads(empty.output) == {"events": []}
    assert busy.run("history", "--channel", "nowhere").output == "no recorded events match\n"
