"""HTTP ingest: persisted before 200, redeliveries once, precise 4xx, 503 when the store is
full, secrets kept out of the logs."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import os
import shutil
import sqlite3
import zlib

import httpx
import pytest
from daemons import SECRET, chat_fragment, chat_started, wait_for, write_setup

from rulekit.channels.body import MAX_ITEMS
from rulekit.store.sqlite import SQLiteStore
from rulekit.testing.telegram_updates import TelegramUser, Updates


def inbox_rows(config) -> list[tuple[int, bytes]]:
    conn = sqlite3.connect(config.parent / "rulekit.sqlite3")
    try:
        return conn.execute("SELECT id, body FROM inbox ORDER BY id").fetchall()
    finally:
        conn.close()


def settled(config) -> bool:
    """Every inbox item processed and every job done: the daemon has nothing left to do."""
    conn = sqlite3.connect(config.parent / "rulekit.sqlite3")
    try:
        inbox = conn.execute("SELECT count(*) FROM inbox WHERE status = 'pending'").fetchone()
        outbox = conn.execute("SELECT count(*) FROM outbox WHERE status != 'done'").fetchone()
        return inbox[0] == 0 and outbox[0] == 0
    finally:
        conn.close()


def test_the_body_is_committed_before_the_200(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    body = chat_started(1)
    response = httpx.post(server.webhook_url, content=body)
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    # another connection sees it at once: it was committed before the answer
    assert (response.json()["id"], body) in inbox_rows(config)
    wait_for(lambda: len(chatra.sent) == 1)
    assert chatra.sent[0]["text"] == "Hello Visitor 1"


def test_redeliveries_sequential_and_concurrent_are_processed_once(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    first, second = chat_started(1), chat_started(2)
    assert httpx.post(server.webhook_url, content=first).json()["status"] == "accepted"
    again = httpx.post(server.webhook_url, content=first)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient() as client:
            return await asyncio.gather(
                *(client.post(server.webhook_url, content=second) for _ in range(20))
            )

    answers = asyncio.run(burst())
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.json()["status"] for a in answers).count("accepted") == 1
    wait_for(lambda: len(chatra.sent) == 2)
    # once nothing is left to process or send, no second processing can show up later
    wait_for(lambda: settled(config))
    assert sorted(m["clientId"] for m in chatra.sent) == ["client00000001", "client00000002"]
    assert len(inbox_rows(config)) == 2


def test_unknown_channel_and_wrong_secret_get_the_same_404(tmp_path, serve):
    server = serve(write_setup(tmp_path))
    wrong_secret = httpx.post(f"{server.url}/webhooks/online-chat/nope", content=b"{}")
    wrong_channel = httpx.post(f"{server.url}/webhooks/other/{SECRET}", content=b"{}")
    assert wrong_secret.status_code == wrong_channel.status_code == 404
    expected = {"error": "unknown channel or wrong secret"}
    assert wrong_secret.json() == wrong_channel.json() == expected
    assert httpx.get(server.webhook_url).status_code == 405


def test_the_secret_s_comparison_tells_nothing_of_its_length_or_of_the_channel(
    tmp_path, serve, monkeypatch
):
    """``hmac.compare_digest`` is constant time only for inputs of one length: given the URL's
    secret and the configured one as they were, its time followed the configured secret's
    length (and a channel that does not exist was compared with a stand-in of another
    length). Every comparison is of two digests of one length."""
    import hmac

    compared: list[tuple[int, int]] = []
    original = hmac.compare_digest

    def recording(a, b):
        compared.append((len(a), len(b)))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    server = serve(write_setup(tmp_path))
    for channel, secret in (
        ("online-chat", "x"),
        ("online-chat", SECRET[:-1]),
        ("online-chat", SECRET + "0" * 500),
        ("no-such-channel", SECRET),
        ("online-chat", SECRET),
    ):
        answer = httpx.post(f"{server.url}/webhooks/{channel}/{secret}", content=b"{}")
        assert answer.status_code == (
            200 if secret == SECRET and channel != "no-such-channel" else 404
        )
    assert len(compared) >= 5
    assert {pair for pair in compared} == {(32, 32)}, compared


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"not json", "not valid JSON"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'"a string"', "JSON object or array"),
    ],
)
def test_malformed_bodies_get_a_precise_400(tmp_path, serve, body, message):
    server = serve(write_setup(tmp_path))
    response = httpx.post(server.webhook_url, content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_oversize_bodies_get_413_with_and_without_content_length(tmp_path, serve):
    server = serve(write_setup(tmp_path, extra="server: {max_body_bytes: 1000}\n"))
    big = b"[" + b"1," * 1000 + b"1]"
    assert httpx.post(server.webhook_url, content=big).status_code == 413

    def chunks():
        for _ in range(100):
            yield b"[1,1,1,1,1,1,1,1,1,1,1,1]   "  # no Content-Length: chunked

    response = httpx.post(server.webhook_url, content=chunks())
    assert response.status_code == 413
    assert "over 1000 bytes" in response.json()["error"]
    # a Content-Length that lies (says small, sends more) is cut off while reading
    with httpx.Client() as client:
        request = client.build_request("POST", server.webhook_url, content=chunks())
        request.headers["Content-Length"] = "10"
        try:
            lied = client.send(request)
            assert lied.status_code in (400, 413)
        except httpx.HTTPError:
            pass  # the server may also just close the connection: never a 5xx or a 200
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200


def test_a_full_disk_answers_503_never_200(tmp_path, serve, chatra):
    config = write_setup(tmp_path, chatra=chatra)
    store = SQLiteStore(tmp_path / "rulekit.sqlite3")
    server = serve(config, store=store)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: len(chatra.sent) == 1)
    with store.transaction() as state:
        pages = state.execute("PRAGMA page_count").fetchone()[0]
        state.execute(f"PRAGMA max_page_count = {pages + 2}")  # as a full disk
    big = json.dumps({"eventName": "chatStarted", "pad": os.urandom(40_000).hex()}).encode()
    answers = [httpx.post(server.webhook_url, content=big + b" " * n) for n in range(3)]
    assert 503 in [a.status_code for a in answers]
    assert all(a.status_code in (200, 503) for a in answers)
    assert answers[-1].status_code == 503
    assert "retry later" in answers[-1].json()["error"]
    accepted = {a.json()["id"] for a in answers if a.status_code == 200}
    assert accepted <= {row[0] for row in inbox_rows(config)}
    # the daemon keeps running; it recovers when space returns
    with store.transaction() as state:
        state.execute("PRAGMA max_page_count = 1073741823")
    assert httpx.post(server.webhook_url, content=chat_started(2)).status_code == 200
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
    server.stop()
    store.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_file_deleted_or_replaced_while_running_answers_503(
    tmp_path, serve, chatra, how
):
    """The SQLite file is removed (or another file takes its name) under the running daemon:
    nothing more is acknowledged into the file that is gone, and /healthz says why; putting the
    file back makes the daemon usable again."""
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    database = tmp_path / "rulekit.sqlite3"
    aside = tmp_path / "aside.sqlite3"
    os.rename(database, aside)
    if how == "replaced":
        sqlite3.connect(database).close()  # an empty database takes the name
    answer = httpx.post(server.webhook_url, content=chat_started(2))
    assert answer.status_code == 503, answer.text
    assert "retry later" in answer.json()["error"]
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 503
    assert how in health.json()["store"]
    # the file comes back: the daemon takes webhooks again, none was lost meanwhile
    os.replace(aside, database)
    assert httpx.post(server.webhook_url, content=chat_started(3)).status_code == 200
    wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
    wait_for(lambda: {m["clientId"] for m in chatra.sent} == {"client00000001", "client00000003"})
    assert [body for _, body in inbox_rows(config)] == [chat_started(1), chat_started(3)]


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("unlinked", "deleted"),
        ("renamed", "renamed"),
        ("copied over", "replaced"),
        ("write-ahead log deleted", "write-ahead log"),
    ],
)
def test_every_way_of_losing_the_file_under_the_daemon_answers_503(
    tmp_path, serve, chatra, how, said
):
    """Whatever takes the file (or its write-ahead log, which holds the latest commits) away
    from the path, nothing more is acknowledged, /healthz says why, and no empty database is
    created in its place."""
    config = write_setup(tmp_path, chatra=chatra)
    server = serve(config)
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 200
    wait_for(lambda: chatra.sent)
    database = tmp_path / "rulekit.sqlite3"
    # the reply's outcome recorded before the file goes (else stopping waits out its bound,
    # trying to record it: a call made is recorded however long the store is away)
    wait_for(lambda: _statuses(database) == ["done"])
    if how == "unlinked":
        os.unlink(database)
    elif how == "renamed":
        os.rename(database, tmp_path / "elsewhere.sqlite3")
    elif how == "copied over":  # a restore from a copy: same bytes, another file
        shutil.copy(database, tmp_path / "copy.sqlite3")
        os.replace(tmp_path / "copy.sqlite3", database)
    else:
        os.unlink(tmp_path / "rulekit.sqlite3-wal")
    for n in (2, 3):
        answer = httpx.post(server.webhook_url, content=chat_started(n))
        assert answer.status_code == 503, answer.text
    health = httpx.get(f"{server.url}/healthz")
    assert health.status_code == 503
    assert said in health.json()["store"]
    if how in ("unlinked", "renamed"):
        assert not database.exists()
    assert {m["clientId"] for m in chatra.sent} == {"client00000001"}


def _statuses(database) -> list[str]:
    with contextlib.closing(sqlite3.connect(database)) as conn:
        return [status for (status,) in conn.execute("SELECT status FROM outbox")]


def test_the_webhook_secret_never_reaches_the_logs(tmp_path, serve, caplog):
    server = serve(write_setup(tmp_path))
    caplog.set_level(logging.DEBUG)
    from rulekit.runtime.logs import CleanRecords

    for logger_name in ("rulekit", "uvicorn", "uvicorn.error"):
        for handler in logging.getLogger(logger_name).handlers:
            handler.addFilter(CleanRecords())
    caplog.handler.addFilter(CleanRecords())
    httpx.post(server.webhook_url, content=b"not json")
    httpx.post(server.webhook_url, content=chat_started(1))
    httpx.post(f"{server.url}/webhooks/online-chat/{SECRET}x", content=b"{}")
    text = caplog.text
    assert "/webhooks/online-chat/***" in text
    assert SECRET not in text


@pytest.mark.parametrize("logged", [False, True], ids=["not-logged", "access-logged"])
def test_webhooks_answer_alike_with_and_without_the_access_log(tmp_path, serve, logged):
    """Unlogged webhooks skip the app's router and middleware; logged ones go through them,
    to the same endpoint: the answers are the same byte for byte."""
    access = logging.getLogger("rulekit.access")
    before = access.level
    access.setLevel(logging.INFO if logged else logging.WARNING)
    try:
        server = serve(write_setup(tmp_path, extra="server: {max_body_bytes: 1000}\n"))
        cases = [
            (server.webhook_url, chat_started(1), 200, b'{"status":"accepted","id":1}'),
            (server.webhook_url, chat_started(1), 200, b'{"status":"duplicate","id":1}'),
            (f"{server.url}/webhooks/online-chat/nope", b"{}", 404, None),
            (server.webhook_url, b"[1,", 400, None),
            (server.webhook_url, b"[" + b"1," * 1000 + b"1]", 413, None),
        ]
        for url, body, status, exact in cases:
            response = httpx.post(url, content=body)
            assert response.status_code == status
            assert response.headers["content-type"] == "application/json"
            assert int(response.headers["content-length"]) == len(response.content)
            if exact is not None:
                assert response.content == exact
            else:
                assert set(response.json()) == {"error"}
        # a trailing slash is the same webhook, answered alike: never redirected (the
        # router's redirect would repeat the secret, on plain http:// behind a proxy that
        # does not forward its scheme)
        answer = httpx.post(server.webhook_url + "/", content=chat_started(2))
        assert answer.status_code == 200 and answer.json()["status"] == "accepted"
        assert "location" not in answer.headers
        wrong = httpx.post(f"{server.url}/webhooks/online-chat/nope/", content=b"{}")
        assert wrong.status_code == 404 and "location" not in wrong.headers
        # beyond those shapes, the path is the router's
        assert httpx.get(server.webhook_url).status_code == 405
    finally:
        access.setLevel(before)


def test_no_path_is_redirected_with_what_it_carried(tmp_path, serve):
    """A path with a slash too many is answered 404, not redirected: a redirect's Location
    would repeat the query (a console search naming a client) on whatever scheme and host the
    daemon was told, plain http:// behind a proxy that does not forward its scheme."""
    server = serve(write_setup(tmp_path))
    for path in ("/healthz/", "/metrics/", "/console/api/me/?q=jane%40shop.example"):
        answer = httpx.get(f"{server.url}{path}", headers={"Host": "elsewhere.example"})
        assert answer.status_code == 404, path
        assert "location" not in answer.headers and "jane" not in answer.text
    assert httpx.get(f"{server.url}/healthz").status_code == 200


TELEGRAM_SECRET = "telegram-secret-0123456789"


def two_channels(folder):
    """A config with a Chatra and a Telegram channel; their webhook paths and headers."""
    config = write_setup(folder)
    text = config.read_text().replace(
        "channels:\n",
        "channels:\n"
        "  telegram: {provider: telegram-bot, webhook_secret: " + TELEGRAM_SECRET + "}\n",
    )
    config.write_text(text)
    update = Updates().message(TelegramUser(4242), "hello")
    return config, [
        (f"/webhooks/online-chat/{SECRET}", chat_started(1), {}),
        (
            f"/webhooks/telegram/{TELEGRAM_SECRET}",
            json.dumps(update).encode(),
            {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET},
        ),
    ]


def encoded(body: bytes, coding: str) -> bytes:
    if "gzip" in coding.lower():
        return gzip.compress(body)
    return zlib.compress(body) if coding == "deflate" else body


@pytest.mark.parametrize("logged", [False, True], ids=["not-logged", "access-logged"])
def test_a_body_with_a_content_encoding_gets_415_on_every_channel(tmp_path, serve, logged):
    """A compressed body is refused as such (never inflated: a bomb stays a small body), not
    read as JSON (a misleading 400), nor, with a coding nobody knows, stored as if plain."""
    access = logging.getLogger("rulekit.access")
    before = access.level
    access.setLevel(logging.INFO if logged else logging.WARNING)
    try:
        config, channels = two_channels(tmp_path)
        server = serve(config)
        bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]")
        for path, body, headers in channels:
            url = server.url + path
            for coding in ["gzip", "deflate", "br", "x-unknown", "identity, gzip", "GZip"]:
                sent = {**headers, "Content-Encoding": coding}
                response = httpx.post(url, content=encoded(body, coding), headers=sent)
                assert response.status_code == 415, (path, coding, response.text)
                assert "Content-Encoding" in response.json()["error"]
            sent = {**headers, "Content-Encoding": "gzip"}
            assert httpx.post(url, content=bomb, headers=sent).status_code == 415
            sent = {**headers, "Content-Encoding": "identity"}
            response = httpx.post(url, content=body, headers=sent)
            assert (response.status_code, response.json()["status"]) == (200, "accepted")
        assert len(inbox_rows(config)) == len(channels)  # nothing else was stored
    finally:
        access.setLevel(before)


def test_while_shutting_down_only_a_configured_channel_is_answered_503(tmp_path, serve):
    """A metric's channel label is a configured channel's name, never a path's: a sender who
    knows no secret gets the 404 every such request gets, shutdown or not."""
    server = serve(write_setup(tmp_path))
    server.daemon.ingest.accepting = False  # as the shutdown sets it first
    invented = [f"invented-{n}" for n in range(20)]
    for channel in invented:
        url = f"{server.url}/webhooks/{channel}/{SECRET}"
        assert httpx.post(url, content=chat_started(1)).status_code == 404
    assert httpx.post(server.webhook_url, content=chat_started(1)).status_code == 503
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'channel="online-chat",status="503"' in metrics
    assert not any(channel in metrics for channel in invented)
    assert inbox_rows(tmp_path / "rulekit.yaml") == []


def test_a_body_with_too_many_items_gets_400_on_every_channel(tmp_path, serve):
    """What one webhook makes the daemon do grows with its lists (an event and its jobs for
    each message); a list or an object over the budget is refused before it is acknowledged."""
    config, channels = two_channels(tmp_path)
    server = serve(config)
    (chatra_path, _, _), (telegram_path, update, telegram_headers) = channels

    def fragment(count: int, keys: int = 0) -> bytes:
        body = json.loads(chat_fragment(1, 1))
        body["messages"] = [dict(body["messages"][0], id=f"m{n}") for n in range(count)]
        body["client"]["info"] = {f"k{n}": n for n in range(keys)}
        return json.dumps(body).encode()

    with_photos = json.loads(update)
    with_photos["message"]["photo"] = [{"file_id": str(n)} for n in range(MAX_ITEMS + 1)]
    refused = [
        (chatra_path, fragment(MAX_ITEMS + 1), {}, f"a list of more than {MAX_ITEMS} items"),
        (chatra_path, fragment(1, MAX_ITEMS + 1), {}, f"an object of more than {MAX_ITEMS} keys"),
        (telegram_path, json.dumps(with_photos).encode(), telegram_headers, "a list of more"),
    ]
    for path, body, headers, message in refused:
        response = httpx.post(server.url + path, content=body, headers=headers)
        assert response.status_code == 400, (path, response.text)
        assert message in response.json()["error"]
    assert inbox_rows(config) == []
    at_the_limit = fragment(MAX_ITEMS, MAX_ITEMS - 10)
    response = httpx.post(server.url + chatra_path, content=at_the_limit)
    assert response.status_code == 200 and response.json()["status"] == "accepted"
