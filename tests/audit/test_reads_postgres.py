"""On PostgreSQL, what the audit commands read (``store.reading()``) is one snapshot: an event
another daemon records meanwhile is not half in it (listed, but without its jobs; its jobs
counted, but not itself), and nothing is written through it."""

from __future__ import annotations

import pytest
from audit_site import CONFIG, RULES, events, record
from scaffold import write

from rulekit.engine.engine import Engine
from rulekit.store.postgres import PostgresStore


def test_a_reading_is_one_snapshot_while_another_store_writes(tmp_path, postgres_url):
    config = write(tmp_path / "rulekit.yaml", CONFIG)
    write(tmp_path / "rules.d" / "rules.yaml", RULES)
    engine = Engine.from_path(tmp_path / "rules.d", config)
    created, refund, angry = events()
    daemon = PostgresStore(postgres_url)
    reader = PostgresStore(postgres_url, upgrade=False)
    try:
        record(daemon, engine, created, b"{}")
        with reader.reading() as state:
            assert [r.event_id for r in state.history(limit=10)] == [created.id]
            record(daemon, engine, angry, b"{}")  # committed meanwhile, with its two jobs
            assert [r.event_id for r in state.history(limit=10)] == [created.id]
            assert state.jobs(event_id=angry.id) == []
            assert state.get_event(angry.id) is None
        with reader.reading() as state:  # the next reading sees it whole
            assert next(r.event_id for r in state.history(limit=10)) == angry.id
            assert len(state.jobs(event_id=angry.id)) == 2
            with pytest.raises(Exception, match="read-only"):
                state.finish_inbox(1)
        record(reader, engine, refund, b"{}")  # its connections write again after a reading
    finally:
        reader.close()
        daemon.close()
