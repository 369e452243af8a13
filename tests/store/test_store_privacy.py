"""Forgetting a client and purging old records, the same for every store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rulekit.audit import retention
from rulekit.config import RetentionSettings
from rulekit.event import Client, Conversation, Event
from rulekit.store import JobSpec
from rulekit.store.erasure import CALL_UNDER_WAY, FORGET_KINDS, FORGOTTEN, PURGE_KINDS

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EMAIL = "jane.doe@example.org"
TEXT = "my card 4111 was charged twice"


def _populate(store, make_event) -> None:
    """Two clients on two channels: ``c-jane`` (the one to forget) and ``c-bob``."""
    with store.transaction() as state:
        jane = Client(id="c-jane", name="Jane Doe", email=EMAIL, ip="203.0.113.9")
        state.save_client("online-chat", jane)
        state.save_client("telegram", Client(id="c-jane", name="Jane on Telegram"))
        state.save_client("online-chat", Client(id="c-bob", name="Bob Roe", email="bob@x.org"))
        state.save_conversation(
            "online-chat", "c-jane", Conversation(id="conv-1", status="open", page="/orders/77")
        )
        state.save_conversation(
            "online-chat", "c-bob", Conversation(id="conv-2", status="open", page="/help")
        )
        inbox_jane, _ = state.append_inbox(
            "online-chat", b'{"client": {"id": "c-jane"}, "text": "card"}', now=T0
        )
        inbox_bob, _ = state.append_inbox("online-chat", b'{"client": {"id": "c-bob"}}', now=T0)
        pending, _ = state.append_inbox("online-chat", b'{"client": {"id": "c-jane"}}', now=T0)
        for item in (inbox_jane, inbox_bob):
            state.finish_inbox(item)
        jane_event = make_event(
            "e-jane",
            client={"id": "c-jane", "name": "Jane Doe", "email": EMAIL},
            message={"text": TEXT, "author": "client"},
        )
        state.record_event(
            jane_event,
            inbox_id=inbox_jane,
            trace={"rules": [{"name": "notify", "matched": True}]},
            jobs=[
                JobSpec("notify", "slack", {"text": f"{EMAIL} wrote: {TEXT}"}, "slack:#ops"),
                JobSpec("tag", "chatra_tag", {"tag": "billing"}, "chatra"),
            ],
            now=T0,
        )
        bob_event = make_event(
            "e-bob",
            conversation={"id": "conv-2"},
            client={"id": "c-bob", "name": "Bob Roe"},
            message={"text": "hello there", "author": "client"},
        )
        state.record_event(
            bob_event,
            inbox_id=inbox_bob,
            trace={},
            jobs=[JobSpec("notify", "slack", {"text": "Bob Roe wrote: hello there"}, "slack:#o")],
            now=T0,
        )
        job = state.jobs(event_id="e-jane")[0]
        state.record_attempt(job.id, "done", result={"echo": f"{EMAIL} wrote"}, now=T0)
        assert pending


def test_forget_erases_one_client_and_counts_what_it_erased(store, make_event):
    _populate(store, make_event)
    with store.transaction() as state:
        counts = state.forget_client("c-jane", channel="online-chat")
    assert set(counts) == set(FORGET_KINDS)
    assert counts == {
        "clients": 1,
        "conversations": 1,
        "events": 1,
        "messages": 1,
        "payloads": 1,  # the pending body stays for the processor
        "jobs": 1,  # the tag job carried nothing personal
        "attempts": 1,
    }
    with store.transaction() as state:
        assert state.get_client("online-chat", "c-jane") is None
        assert state.get_client("telegram", "c-jane") is not None  # another channel
        record = state.get_event("e-jane")
        assert record is not None
        assert record.data["client"]["id"] == "c-jane"
        assert record.data["client"]["email"] is None and record.data["client"]["name"] is None
        assert record.data["message"]["text"] is None
        notify, tag = state.jobs(event_id="e-jane")
        assert notify.params == {"text": FORGOTTEN} and tag.params == {"tag": "billing"}
        assert state.attempts(notify.id)[0].result == {"echo": FORGOTTEN}
        assert state.get_conversation("online-chat", "c-jane").page is None
        bodies = {item.body for item in state.inbox_items()}
        assert b'{"client": {"id": "c-jane"}, "text": "card"}' not in bodies
        assert b'{"client": {"id": "c-jane"}}' in bodies  # pending
        # the other client is untouched
        assert state.get_client("online-chat", "c-bob").email == "bob@x.org"
        assert state.get_event("e-bob").data["message"]["text"] == "hello there"
        assert state.get_conversation("online-chat", "c-bob").page == "/help"
        assert b'{"client": {"id": "c-bob"}}' in bodies
    with store.transaction() as state:
        again = state.forget_client("c-jane", channel="online-chat")
    assert again["clients"] == 0 and again["payloads"] == 0 and again["jobs"] == 0


def test_forget_on_every_channel(store, make_event):
    _populate(store, make_event)
    with store.transaction() as state:
        assert state.forget_client("c-jane")["clients"] == 2
        assert state.get_client("telegram", "c-jane") is None


def test_purge_keeps_pending_work_and_recent_records(store, make_event):
    _populate(store, make_event)
    later = T0 + timedelta(days=40)
    with store.transaction() as state:
        tag = state.jobs(event_id="e-jane")[1]
        state.record_attempt(tag.id, "dead", error="chatra said no", now=T0)
        state.record_event(
            make_event("e-new", client={"id": "c-bob"}), inbox_id=None, trace={}, now=later
        )
        # Bob's job is still pending: his event stays (its inbox item goes)
        counts = state.purge(events_before=T0 + timedelta(days=1), payloads_before=later)
    assert set(counts) == set(PURGE_KINDS)
    assert counts == {"events": 1, "jobs": 2, "attempts": 2, "timers": 0, "inbox": 2, "payloads": 0}
    with store.transaction() as state:
        assert state.get_event("e-jane") is None
        assert state.jobs(event_id="e-jane") == []
        assert state.get_event("e-bob").inbox_id is None
        assert state.get_event("e-new") is not None
        statuses = sorted(item.status for item in state.inbox_items())
        assert statuses == ["pending"]


def test_purge_empties_old_payloads_only(store, make_event):
    _populate(store, make_event)
    with store.transaction() as state:
        counts = state.purge(
            events_before=T0 - timedelta(days=1), payloads_before=T0 + timedelta(seconds=1)
        )
    assert counts == {"events": 0, "jobs": 0, "attempts": 0, "timers": 0, "inbox": 0, "payloads": 2}
    with store.transaction() as state:
        items = state.inbox_items()
        assert sorted(len(item.body) > 0 for item in items) == [False, False, True]
        assert state.get_event("e-jane") is not None


def test_retention_purges_in_bounded_batches_until_nothing_is_left(store, make_event):
    with store.transaction() as state:
        for n in range(7):
            inbox_id, _ = state.append_inbox("online-chat", b'{"n": %d}' % n, now=T0)
            state.finish_inbox(inbox_id)
            state.record_event(make_event(f"e{n}"), inbox_id=inbox_id, trace={}, jobs=[], now=T0)
        state.record_event(
            make_event("recent"), inbox_id=None, trace={}, now=T0 + timedelta(days=60)
        )
    batches = []
    original = store.transaction

    def counted():  # each batch is a transaction of its own
        batches.append(1)
        return original()

    store.transaction = counted
    settings = RetentionSettings(events=timedelta(days=30), payloads=timedelta(days=30))
    counts = retention.purge(store, settings, T0 + timedelta(days=61), batch=3)
    del store.transaction
    assert counts == {"events": 7, "jobs": 0, "attempts": 0, "timers": 0, "inbox": 7, "payloads": 0}
    assert len(batches) == 3  # 3 + 3 + 1
    with store.transaction() as state:
        assert [record.event_id for record in state.history()] == ["recent"]
        assert state.inbox_items() == []


def test_purge_deletes_timers_that_ended_before_retention_and_keeps_the_rest(store, make_event):
    """A timer that ended keeps why (an ``unless:`` quoting what it read of the client): it goes
    once audit records of its time go. A pending timer stays however old, as does one that
    ended within retention."""
    reason = f"unless: {EMAIL} wrote {TEXT!r}"
    minute = timedelta(minutes=1)
    with store.transaction() as state:
        state.record_event(make_event("e-jane"), inbox_id=None, trace={}, now=T0)
        state.set_timer("chase", "conv-1", "online-chat", T0 + minute, "e-jane", now=T0)
        state.set_timer("escalate", "conv-1", "online-chat", T0 + minute, "e-jane", now=T0)
        state.set_timer("remind", "conv-1", "online-chat", T0 + minute, "e-jane", now=T0)
        state.set_timer(
            "later", "conv-1", "online-chat", T0 + timedelta(days=400), "e-jane", now=T0
        )
        state.cancel_timers("remind", "conv-1", by_event="e-jane", now=T0)
    with store.transaction() as state:
        claimed = {t.rule: t for t in state.claim_timers("d1", lease=60, now=T0 + minute)}
        state.finish_timer(claimed["chase"].id, "d1", "unless", reason=reason, at=T0 + minute)
    recent = T0 + timedelta(days=35)
    with store.transaction() as state:
        state.finish_timer(claimed["escalate"].id, "d1", "error", reason=reason, at=recent)
    with store.transaction() as state:
        counts = state.purge(events_before=T0 + timedelta(days=30), payloads_before=T0)
    assert counts["timers"] == 2
    with store.transaction() as state:
        left = {timer.rule: timer.status for timer in state.timers()}
        again = state.purge(events_before=T0 + timedelta(days=30), payloads_before=T0)
    assert left == {"escalate": "error", "later": "pending"}
    assert again["timers"] == 0


def test_retention_purges_timers_in_bounded_batches(store, make_event):
    with store.transaction() as state:
        state.record_event(make_event("e1"), inbox_id=None, trace={}, now=T0)
        for n in range(5):
            state.set_timer(f"r{n}", "conv-1", "online-chat", T0, "e1", now=T0)
            state.cancel_timers(f"r{n}", "conv-1", by_event="e1", now=T0)
    settings = RetentionSettings(events=timedelta(days=30), payloads=timedelta(days=30))
    counts = retention.purge(store, settings, T0 + timedelta(days=31), batch=2, pause=lambda s: 0)
    assert counts["timers"] == 5 and counts["events"] == 1
    with store.transaction() as state:
        assert state.timers() == []


def test_forget_finds_every_stored_form_in_every_store(store, make_event):
    """Escaped, encoded and re-cased copies of a personal value are erased; the trace's
    reasons and condition errors too; rule and action names stay."""
    name, text = "O'Brien <ob@x.io> & Co_", "I want *bold* café"
    page = "https://shop.example.com/?email=ob%40x.io"
    with store.transaction() as state:
        inbox_id, _ = state.append_inbox(
            "online-chat", b'{"x": 1}', conversation_key="c-ob", now=T0
        )
        state.finish_inbox(inbox_id, error=f"cannot read {json.dumps(text)}")
        event = make_event(
            "e-ob",
            conversation={"id": "conv-ob", "page": page, "tags": ["vip"]},
            client={"id": "c-ob", "name": name, "custom": {"ids": [12345, {"deep": "Zoë-42"}]}},
            message={"text": text, "author": "client"},
        )
        trace = {
            "rules": [
                {
                    "name": "Tell",
                    "matched": False,
                    "trace": {
                        "reason": f"condition failed: bad value {text!r}",
                        "conditions": [{"source": "x", "error": f"no {name.upper()}"}],
                    },
                }
            ],
            "plan": [{"rule": "Tell", "action": "telegram", "params": {"text": "&lt;b&gt;"}}],
        }
        html_text = "<b>O&#x27;Brien &lt;ob@x.io&gt; &amp; Co_</b>"
        state.record_event(
            event,
            inbox_id=None,
            trace=trace,
            jobs=[
                JobSpec("Tell", "telegram", {"text": html_text, "name": name}, "telegram:1"),
                JobSpec("Tell", "telegram", {"text": "I want \\*bold\\* café"}, "telegram:2"),
                JobSpec("Tell", "slack", {"text": "O'Brien &lt;ob@x.io&gt; &amp; Co_"}, "s:1"),
                JobSpec(
                    "Tell",
                    "slack",
                    {"text": "?next=https%3A%2F%2Fshop.example.com%2F%3Femail%3Dob%2540x.io"},
                    "s:2",
                ),
                JobSpec("Tell", "slack", {"text": "Zoë-42 #12345"}, "s:3"),
            ],
            now=T0,
        )
        first = state.jobs(event_id="e-ob")[0]
        state.record_attempt(first.id, "dead", error='{"text":"I want *bold* caf\\u00e9"}', now=T0)
    with store.transaction() as state:
        counts = state.forget_client("c-ob")
    assert counts["jobs"] == 5 and counts["attempts"] == 1 and counts["payloads"] == 1
    with store.transaction() as state:
        record = state.get_event("e-ob")
        assert record.data["conversation"]["page"] is None
        assert record.data["conversation"]["id"] == "conv-ob"
        rule = record.trace["rules"][0]
        assert rule["name"] == "Tell" and rule["trace"]["reason"] == FORGOTTEN
        assert rule["trace"]["conditions"][0]["error"] == FORGOTTEN
        assert record.trace["plan"][0]["params"] == {"text": "&lt;b&gt;"}
        jobs = state.jobs(event_id="e-ob")
        assert [job.params["text"] for job in jobs] == [FORGOTTEN] * 5
        assert jobs[0].params["name"] == FORGOTTEN and jobs[0].rule == "Tell"
        assert state.attempts(jobs[0].id)[0].error == FORGOTTEN
        (item,) = [item for item in state.inbox_items() if item.id == inbox_id]
        assert item.error == FORGOTTEN


def test_forget_stops_the_jobs_that_would_send_what_it_erased(store, make_event):
    """A job still to be sent (or a dead letter to send again) whose parameters quoted the
    client would send ``[forgotten]`` in their place: it is dead, saying why, and not
    retryable; a job that quoted nothing of the client goes on."""
    from rulekit.audit import repair

    with store.transaction() as state:
        event = make_event(
            "e-jane",
            client={"id": "c-jane", "name": "Jane Doe", "email": EMAIL},
            message={"text": TEXT, "author": "client"},
        )
        state.record_event(
            event,
            inbox_id=None,
            trace={},
            jobs=[
                JobSpec("greet", "autoreply", {"text": f"Hello, you wrote: {TEXT}"}, "chatra"),
                JobSpec("notify", "slack", {"text": f"{EMAIL} is back"}, "slack:#ops"),
                JobSpec("tag", "chatra_tag", {"tag": "billing"}, "chatra"),
            ],
            now=T0,
        )
        greet, notify, _ = state.jobs(event_id="e-jane")
        state.record_attempt(notify.id, "dead", error="slack said no", now=T0)
    with store.transaction() as state:
        state.forget_client("c-jane")
    with store.transaction() as state:
        greet, notify, tag = state.jobs(event_id="e-jane")
        assert greet.params == {"text": FORGOTTEN} and notify.params == {"text": FORGOTTEN}
        assert (greet.status, notify.status, tag.status) == ("dead", "dead", "pending")
        assert greet.last_error is not None and "erased" in greet.last_error
        assert [job.id for job in state.jobs(status="pending")] == [tag.id]
        for job in (greet, notify):
            try:
                repair.retry(state, job.id, None)
            except repair.NotRepairable as exc:
                assert "erased" in str(exc)
            else:
                raise AssertionError(f"job {job.id} was made pending again")
        assert state.get_job(greet.id).status == "dead"


def test_forget_hands_the_client_s_jobs_held_by_a_daemon_back_as_the_erasure_left_them(
    store, make_event
):
    """A daemon held the client's jobs with their event as they were before the erasure: the
    claim of one still to be sent is withdrawn (its start refused, so the daemon reads it
    again), its event is read for its claim even when the daemon has it (it was erased since),
    and one whose call was under way is dead, its call's outcome not recorded (what the
    service answered may echo what it was sent)."""
    with store.transaction() as state:
        event = make_event(
            "e-jane",
            client={"id": "c-jane", "name": "Jane Doe", "email": EMAIL},
            message={"text": TEXT, "author": "client"},
        )
        state.record_event(
            event,
            inbox_id=None,
            trace={},
            jobs=[
                JobSpec("crm", "webhook", {"to": "crm"}, "webhook:crm", lane="a"),
                JobSpec("crm", "webhook", {"to": "crm"}, "webhook:crm", lane="b"),
            ],
            now=T0,
        )
        claimed = state.claim_jobs("d1", lease=60, now=T0)
        assert len(claimed) == 2
        calling, waiting = claimed
        assert state.start_call(calling.id, "d1", lease=60, now=T0)
        held = state.events_for_jobs(["e-jane"], held=["e-jane"])
        assert held["e-jane"].data == {}  # the daemon has it: not read
    with store.transaction() as state:
        state.forget_client("c-jane")
    with store.transaction() as state:
        assert not state.start_call(waiting.id, "d1", lease=60, now=T0)
        read = state.events_for_jobs(["e-jane"], held=["e-jane"], budget=0)["e-jane"]
        assert read.data["client"]["email"] is None and read.data["message"]["text"] is None
        echo = {"echo": f"{EMAIL} wrote: {TEXT}"}
        assert not state.record_attempt(calling.id, "done", result=echo, now=T0, owner="d1")
        job = state.get_job(calling.id)
        assert job.status == "dead" and job.last_error == CALL_UNDER_WAY
        assert job.result is None and state.attempts(calling.id) == []
        reclaimed = state.claim_jobs("d2", lease=60, now=T0)
        assert [job.id for job in reclaimed] == [waiting.id]


def test_forget_of_a_short_numeric_client_id_keeps_other_clients_set_aside_bodies(store):
    """An early Telegram user's id has five digits, which another user's update holds in its
    numbers (a date, an update id): the erasure empties the bodies naming the client id, not
    those holding its digits, whose set-aside webhooks would no longer be requeued."""
    theirs = b'{"update_id":946080,"message":{"date":1764608000,"from":{"id":46080}}}'
    others = b'{"update_id":946081,"message":{"date":1764608001,"from":{"id":999}},"x":"46080"}'
    spaced = b'{"update_id": 946082, "message": {"from": {"id": 46080, "is_bot": false}}}'
    with store.transaction() as state:
        state.save_client("telegram", Client(id="46080", name="Early User"))
        ids = [state.append_inbox("telegram", body, now=T0)[0] for body in (theirs, spaced)]
        other = state.append_inbox("telegram", others.replace(b',"x":"46080"', b""), now=T0)[0]
        for item in (*ids, other):
            state.finish_inbox(item, error="set aside: a bug")
    with store.transaction() as state:
        state.forget_client("46080", channel="telegram")
    with store.transaction() as state:
        assert [state.get_inbox(item).body for item in ids] == [b"", b""]
        assert state.get_inbox(other).body == others.replace(b',"x":"46080"', b"")


def test_forget_of_a_numeric_client_id_keeps_other_updates_holding_it_as_another_number(store):
    """A Telegram user's id has ten digits, as every update's date has: another user's update
    dated that second, or holding the number as a width or a file's size, does not name the
    client and keeps its body; one holding it as an id (a forwarded message's sender) does not."""
    client = "1764608000"
    others = [
        b'{"update_id":946081,"message":{"date":1764608000,"from":{"id":999}}}',
        b'{"update_id":946082,"message":{"from":{"id":999},"photo":[{"width":1764608000}]}}',
        b'{"update_id": 946083, "message": {"document": {"file_size": 1764608000}}}',
    ]
    naming = [
        b'{"update_id":946084,"message":{"from":{"id":1764608000,"is_bot":false}}}',
        b'{"update_id":946085,"message":{"from":{"id":999},"forward_from":{"id":1764608000}}}',
        b'{"update_id": 946086, "message": {"contact": {"user_id": 1764608000}}}',
    ]
    with store.transaction() as state:
        state.save_client("telegram", Client(id=client, name="Ann"))
        ids = [state.append_inbox("telegram", body, now=T0)[0] for body in (*others, *naming)]
        for item in ids:
            state.finish_inbox(item, error="set aside: a bug")
    with store.transaction() as state:
        state.forget_client(client, channel="telegram")
    with store.transaction() as state:
        assert [state.get_inbox(item).body for item in ids] == [*others, b"", b"", b""]


def test_forget_erases_the_bodies_of_the_clients_conversations_and_no_one_elses(store, make_event):
    """The bodies of a client's conversations are those of the conversations their events are
    in, not those whose key equals the client id: on a ``webhook`` channel a conversation's id
    is the sender's (a ticket's number), and forgetting Telegram user 111 on every channel
    emptied the set-aside bodies of another person's conversation ``111`` there, while the
    bodies of the forgotten client's own conversation, keyed by its id, were kept."""
    tg_body = b'{"update_id":5,"message":{"from":{"id":111},"chat":{"id":111},"text":"hi"}}'
    jane_closed = b'{"event":"closed","conversation":{"id":"order-7"},"message":{"text":"bye"}}'
    alice = b'{"event":"message","conversation":{"id":"web:111"},"client":{"id":"c-alice"}}'
    with store.transaction() as state:
        telegram = state.append_inbox("telegram", tg_body, conversation_key="111", now=T0)[0]
        jane = state.append_inbox("web", b'{"n": 1}', conversation_key="order-7", now=T0)[0]
        closed = state.append_inbox("web", jane_closed, conversation_key="order-7", now=T0)[0]
        other = state.append_inbox("web", alice, conversation_key="111", now=T0)[0]
        state.finish_inbox(jane)
        for item in (telegram, closed, other):
            state.finish_inbox(item, error="set aside: a bug")
        for event_id, channel, client, conversation, inbox in (
            ("telegram:msg:111:1", "telegram", "111", "telegram:111", telegram),
            ("web:order-7-1", "web", "c-jane", "web:order-7", jane),
        ):
            state.save_conversation(
                channel, conversation.split(":")[1], Conversation(id=conversation)
            )
            event = make_event(
                event_id,
                channel=channel,
                conversation={"id": conversation},
                client={"id": client},
                message={"text": "hi", "author": "client"},
            )
            state.record_event(event, inbox_id=inbox, trace={}, now=T0)
    with store.transaction() as state:
        state.forget_client("111")
        state.forget_client("c-jane", channel="web")
    with store.transaction() as state:
        assert [state.get_inbox(item).body for item in (telegram, jane, closed)] == [b""] * 3
        assert state.get_inbox(other).body == alice


def test_forget_scrubs_the_reasons_of_the_clients_timers(store, make_event):
    """A timer's reason (its ``unless:`` failed, quoting what it read) is stored with the timer,
    not only in the trace of the event it fired as: it is scrubbed too."""
    with store.transaction() as state:
        event = make_event(
            "e-jane",
            conversation={"id": "conv-1"},
            client={"id": "c-jane", "name": "Jane Doe", "email": EMAIL},
            message={"text": TEXT, "author": "client"},
        )
        state.record_event(event, inbox_id=None, trace={}, now=T0)
        state.set_timer("Nudge", "conv-1", "online-chat", T0, "e-jane", now=T0)
        (timer,) = state.claim_timers("test", lease=60, now=T0 + timedelta(minutes=1))
        reason = f"unless failed: UndefinedError: 'dict object' has no attribute {TEXT!r}"
        assert state.finish_timer(timer.id, "test", "error", reason=reason, at=T0)
    with store.transaction() as state:
        state.forget_client("c-jane")
    with store.transaction() as state:
        (timer,) = state.timers(conversation_id="conv-1")
        assert TEXT not in timer.reason and timer.reason == FORGOTTEN


def test_forget_leaves_records_that_load_when_a_personal_value_is_part_of_a_typed_one(
    store, make_event
):
    """A client's custom data may hold short values that are parts of times or choices ("2024"
    of a time, "high" of a priority, "video" of a message kind). Erasure replaced those times
    and choices with "[forgotten]": the conversation no longer loaded (the client's next message
    failed) nor did the event (a pending timer, the console, ``why``)."""
    reply_at = T0 + timedelta(minutes=5)
    conversation = Conversation(
        id="conv-9",
        status="open",
        priority="high",
        last_client_message_at=T0,
        last_agent_reply_at=reply_at,
        first_agent_reply_at=reply_at,
        last_agent="agent.video@example.com",
        page="/plans/video",
    )
    client = Client(
        id="c-ann", name="Ann Kim", custom={"tier": "high", "since": "2024", "wants": "video"}
    )
    with store.transaction() as state:
        state.save_client("online-chat", client)
        state.save_conversation("online-chat", "c-ann", conversation)
        state.record_event(
            make_event(
                "e-ann",
                conversation=conversation.model_dump(),
                client=client.model_dump(),
                message={"id": "m9", "text": "call me", "kind": "video", "created_at": T0},
            ),
            inbox_id=None,
            trace={},
            now=T0,
        )
    with store.transaction() as state:
        state.forget_client("c-ann")
    with store.transaction() as state:
        found = state.find_conversation("online-chat", "conv-9")
        record = state.get_event("e-ann")
    assert found is not None and record is not None
    kept = found[1]
    assert (kept.priority, kept.last_client_message_at, kept.last_agent_reply_at) == (
        "high",
        T0,
        reply_at,
    )
    assert kept.first_agent_reply_at == reply_at and kept.page is None
    assert kept.last_agent == "agent.video@example.com"  # the agent's, not the client's
    event = Event.model_validate(record.data)
    assert (event.conversation.priority, event.message.kind, event.message.created_at) == (
        "high",
        "video",
        T0,
    )
    assert event.client.custom == {} and event.message.text is None


def test_purge_forgets_shared_pacing_whose_slot_passed_long_ago(backend):
    """A key whose next slot passed over an hour ago is the same as none: retention forgets it
    (each destination and conversation paced would keep a row forever, its key made of the
    params); a key still paced stays."""
    store = backend.open()
    if not getattr(store, "shares_pacing", False):
        pytest.skip("a store one daemon owns keeps no pacing")
    with store.transaction() as state:
        state.pause_pace("telegram:5550001234987", -7200)  # its slot two hours ago
        state.pause_pace("slack:#support", 600)
        state.purge(events_before=T0, payloads_before=T0)
    with store.transaction() as state:
        assert state.paused_for(["slack:#support"]) > 500
        keys = [row["key"] for row in state.execute("SELECT key FROM pacing").fetchall()]
    assert keys == ["slack:#support"]
