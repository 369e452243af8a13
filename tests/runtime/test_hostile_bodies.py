"""Hostile webhook bodies against one real daemon: every body gets a 2xx or a clear 4xx, never a
5xx, and an accepted body is processed (or set aside with a message that says what is wrong,
never with a Python exception).

Lone surrogates (``"\\ud800"``, valid JSON) go into every string and every key of every Chatra
sample: the body is accepted and processed as if they were U+FFFD, the inbox keeps the exact
bytes, and ``rulekit history`` and ``rulekit why`` read the stored events.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator

import httpx
import pytest
from daemons import chat_started, wait_for, write_setup
from hostile import (
    PYTHON_ERROR,
    SAMPLES,
    Site,
    encode,
    fresh,
    key_paths,
    renamed_key,
    replaced,
    rulekit,
    running_site,
    string_paths,
    value_paths,
    with_surrogates,
)

from rulekit.channels.body import MAX_DEPTH, MAX_INT_DIGITS, MAX_KEY_CHARS

COUNTER = itertools.count(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("hostile")) as running:
        yield running


def surrogate_variants() -> list[tuple[str, bytes]]:
    """One body per string value and per key of every sample, surrogates added to it."""
    variants = []
    for name, sample in SAMPLES.items():
        body = fresh(sample, next(COUNTER))
        for path in string_paths(body):
            variant = replaced(fresh(sample, next(COUNTER)), path, with_surrogates)
            variants.append((f"{name} value {path}", encode(variant)))
        for path in key_paths(body):
            variant = renamed_key(fresh(sample, next(COUNTER)), path, with_surrogates)
            variants.append((f"{name} key {path}", encode(variant)))
    return variants


@pytest.mark.slow
def test_lone_surrogates_in_any_string_or_key_are_accepted_processed_and_readable(site):
    variants = surrogate_variants()
    assert len(variants) > 400  # every string and key of nine samples
    ids = site.accept([body for _, body in variants])
    settled = site.inbox.settle(ids)
    events: list[str] = []
    for (what, body), inbox_id in zip(variants, ids, strict=True):
        assert b"\\ud800" in body and b"\\udfff" in body
        assert site.inbox.body(inbox_id) == body  # the exact bytes, for audit
        status, error = settled[inbox_id]
        if " value " in what and not what.endswith("('eventName',)"):
            assert (status, error) == ("done", None), what
        else:
            # a known key renamed is a missing field: set aside, saying which (never a crash)
            assert status == "done" or not PYTHON_ERROR.match(error or ""), (what, error)
        events += site.inbox.events(inbox_id)
    assert len(events) > 300
    # the stored events are text: every reader shows them (U+FFFD where a surrogate was)
    document = json.loads(
        rulekit(site.config, "history", "--format", "json", "--show-content", "--limit", "100000")
    )
    shown = {line["event_id"] for line in document["events"]}
    assert set(events) <= shown
    assert "\ufffd" in json.dumps(document, ensure_ascii=False)
    for event_id in events[:: max(1, len(events) // 40)]:
        output = rulekit(site.config, "why", event_id, "--show-content", "--raw")
        assert event_id in output
        why = json.loads(rulekit(site.config, "why", event_id, "--format", "json", "--raw"))
        assert why["event_id"] == event_id


def test_a_surrogate_in_the_client_id_keeps_the_conversation_together(site):
    n = next(COUNTER)
    started = fresh(SAMPLES["chat_started_anonymous.json"], n)
    started["client"]["id"] = with_surrogates(f"visitor-{n}")
    follow_up = fresh(SAMPLES["chat_fragment_client_message.json"], n)
    follow_up["client"]["id"] = started["client"]["id"]
    ids = site.accept([encode(started)]) + site.accept([encode(follow_up)])  # in this order
    assert all(s == ("done", None) for s in site.inbox.settle(ids).values())
    kinds = [
        json.loads(rulekit(site.config, "why", event_id, "--format", "json"))["event"]
        for inbox_id in ids
        for event_id in site.inbox.events(inbox_id)
    ]
    assert kinds[0] == "created" and "created" not in kinds[1:]


def test_client_ids_the_parser_reads_as_one_share_the_conversation_key(site):
    """The key stored at ingest (which orders a conversation's items between daemons sharing
    a store) is the client id as the parser reads it: padded, or written as a number."""
    n = next(COUNTER)
    number = 10**9 + n
    spellings = [f"visitor-{n}", f" visitor-{n}", f"visitor-{n}\t", f"\u3000visitor-{n} "]
    spellings += [number, f" {number} ", str(number)]
    bodies = []
    for spelling in spellings:
        body = fresh(SAMPLES["chat_started_anonymous.json"], next(COUNTER))
        body["client"]["id"] = spelling
        bodies.append(encode(body))
    ids = [site.accept([body])[0] for body in bodies]  # in this order
    keys = [site.inbox.conversation_key(inbox_id) for inbox_id in ids]
    assert keys == [f"visitor-{n}"] * 4 + [str(number)] * 3
    assert all(s == ("done", None) for s in site.inbox.settle(ids).values())
    kinds = [
        json.loads(rulekit(site.config, "why", event_id, "--format", "json"))["event"]
        for inbox_id in ids
        for event_id in site.inbox.events(inbox_id)
    ]
    assert kinds.count("created") == 2  # one conversation per client


REFUSED = [
    (b'{"eventName": "chatStarted", "n": 1e999999}', "number out of range"),
    (b'{"eventName": "chatStarted", "n": -1e999999}', "number out of range"),
    (b'{"n": ' + b"9" * 10_000 + b"}", f"more than {MAX_INT_DIGITS} digits"),
    (b'{"n": -' + b"9" * (MAX_INT_DIGITS + 1) + b"}", f"more than {MAX_INT_DIGITS} digits"),
    (b'{"n": NaN}', "NaN is not a JSON value"),
    (b'{"n": [Infinity]}', "Infinity is not a JSON value"),
    (b'{"n": -Infinity}', "-Infinity is not a JSON value"),
    (b'{"eventName": "chatStarted", "eventName": "chatFragment"}', "'eventName' twice"),
    (b'{"client": {"id": "a", "id": "b"}}', "'id' twice"),
    (b'{"k\\ud800": 1, "k\\udfff": 2}', "twice"),  # the same key once surrogates are replaced
    (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested too deeply"),
    (b'{"a":' * 200 + b"1" + b"}" * 200, "nested too deeply"),
    (b"null", "not null"),
    (b"12", "not a number"),
    (b"true", "not a boolean"),
    (b'"\\ud800"', "not a string"),
    (b"\xed\xa0\x80", "not UTF-8"),  # a surrogate encoded as UTF-8 bytes is not UTF-8
    ('{"a": "é"}'.encode("utf-16"), "not UTF-8"),
    (b"\xef\xbb\xbf", "empty"),
    (b" \n\t", "empty"),
    (b'{"a": 1', "not valid JSON"),
]


@pytest.mark.parametrize(("body", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_bodies_no_provider_can_accept_get_a_precise_400(site, body, message):
    answer = site.post(body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]


def test_unusual_but_acceptable_bodies_are_processed(site):
    base = SAMPLES["chat_started_anonymous.json"]
    long_id = fresh(base, next(COUNTER))
    long_id["client"]["id"] = "v" * 300_000  # far over any index's key size
    long_text = fresh(base, next(COUNTER))
    long_text["message"]["text"] = "x" * 1_000_000
    long_text["client"]["info"] = {"k" * 10_000: "v" * 10_000}
    numbers = fresh(base, next(COUNTER))
    numbers["client"]["info"] = {"big": int("9" * MAX_INT_DIGITS), "small": 1e-300, "neg": -0.0}
    deep = fresh(base, next(COUNTER))
    deep["client"]["info"] = {"deep": json.loads("[" * (MAX_DEPTH - 4) + "]" * (MAX_DEPTH - 4))}
    bom = b"\xef\xbb\xbf" + encode(fresh(base, next(COUNTER)))
    bodies = [encode(long_id), encode(long_text), encode(numbers), encode(deep), bom]
    ids = site.accept(bodies)
    settled = site.inbox.settle(ids)
    assert list(settled.values()) == [("done", None)] * len(ids)
    assert all(len(site.inbox.events(inbox_id)) == 1 for inbox_id in ids)
    # a derived key is bounded: a long client id is kept as its digest
    key = site.inbox.conversation_key(ids[0])
    assert key.startswith("sha256:") and len(key) <= MAX_KEY_CHARS


WRONG = (12345, -1.5, True, None, [], ["x", 1], {}, {"a": {"b": 1}}, "x" * 5000)
"""Values of the wrong type for most fields (and of the right type for some: they must pass)."""


def wrong_type_variants(every: bool) -> list[tuple[str, bytes]]:
    """Bodies with one value of every sample replaced: by each of :data:`WRONG` (``every``),
    or by one of them in turn."""
    variants = []
    turn = itertools.cycle(WRONG)
    for name, sample in SAMPLES.items():
        for path in value_paths(sample):
            for wrong in WRONG if every else (next(turn),):
                body = replaced(fresh(sample, next(COUNTER)), path, lambda _, w=wrong: w)
                variants.append((f"{name} {path} = {str(wrong)[:20]}", encode(body)))
    return variants


@pytest.mark.parametrize(
    "every", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["in-turn", "every"]
)
def test_any_known_field_of_a_wrong_type_is_processed_or_set_aside_with_a_clear_reason(site, every):
    variants = wrong_type_variants(every)
    assert len(variants) > (2000 if every else 250)
    ids = site.accept([body for _, body in variants])
    settled = site.inbox.settle(ids, timeout=300)
    crashed = [
        (what, error)
        for (what, _), (status, error) in zip(variants, (settled[i] for i in ids), strict=True)
        if status != "done" and (not error or PYTHON_ERROR.match(error))
    ]
    assert crashed == []
    assert sum(1 for status, _ in settled.values() if status == "done") > len(ids) // 2


def test_after_all_that_a_normal_webhook_is_accepted_and_processed(site):
    [inbox_id] = site.accept([chat_started(next(COUNTER))])
    assert site.inbox.settle([inbox_id])[inbox_id] == ("done", None)
    assert len(site.inbox.events(inbox_id)) == 1
    assert httpx.get(f"{site.server.url}/healthz").status_code == 200


@pytest.mark.slow
def test_ids_too_long_for_an_index_neither_block_nor_lose_webhooks_on_postgresql(
    tmp_path, serve, postgres_url
):
    """PostgreSQL refuses index entries over ~2700 bytes: such an id must not make the item
    unprocessable (it used to block the whole inbox, retried as a store outage)."""
    config = write_setup(tmp_path)
    config.write_text(
        config.read_text().replace("storage: sqlite:///rulekit.sqlite3", f"storage: {postgres_url}")
    )
    server = serve(config)
    base = SAMPLES["chat_transcript_with_email.json"]
    bodies = []
    for path in [("client", "id"), ("client", "chatId"), ("messages", 0, "id")]:
        body = fresh(base, next(COUNTER))
        noise = os.urandom(20_000).hex()  # incompressible: PostgreSQL compresses index entries
        bodies.append(encode(replaced(body, path, lambda value, n=noise: value + n)))
    bodies.append(chat_started(next(COUNTER)))
    ids = [httpx.post(server.webhook_url, content=body).json()["id"] for body in bodies]
    store = server.daemon.store

    def settled() -> list[tuple[str, str | None]] | None:
        with store.transaction() as state:
            items = [state.get_inbox(i) for i in ids]
        statuses = [(item.status, item.error) for item in items]
        return statuses if all(s != "pending" for s, _ in statuses) else None

    assert wait_for(settled, timeout=60) == [("done", None)] * len(ids)
