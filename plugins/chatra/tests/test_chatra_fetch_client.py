"""``fetch_client``: a client a webhook leaves without its data is fetched with ``GET
/clients/{id}`` from a fake Chatra on loopback, paced, once per client, and handed to the inbox
as rulekit's own body, which then updates the client like a webhook."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any
from urllib.parse import urlsplit

import httpx
from chatra_samples import CHANNEL, encode, make_provider, sample_body
from pydantic import SecretStr
from rulekit.actions.pacing import Pace, Pacer, service_key
from rulekit.errors import PermanentActionError, RetryableActionError, StoreUnavailable
from rulekit.store import MemoryStore
from rulekit.testing.clock import run_virtual

from rulekit_chatra.api import ChatraAPI
from rulekit_chatra.fetch import ClientFetcher
from rulekit_chatra.payload import FETCHED
from rulekit_chatra.testing import FakeChatra

VISITOR = "oaedoecve6pr5n8i4p40mgg1w103dgdzvgpmm82i"


class Inbox:
    """An inbox (the :class:`rulekit.channels.base.Inbound` a daemon hands the provider) that
    keeps what it is given; ``refuse`` bodies first answer that the store is unavailable. The
    service's pauses are kept in ``pacer`` (a real one, as the daemon's dispatcher shares it)."""

    def __init__(self, refuse: int = 0, pacer: Pacer | None = None) -> None:
        self.bodies: list[tuple[dict[str, Any], str, str | None]] = []
        self.refuse = refuse
        self.arrived = asyncio.Event()
        self.pacer = pacer if pacer is not None else Pacer()
        self.pauses: list[float] = []

    async def accept(
        self, body: bytes, *, delivery_key: str, conversation_key: str | None = None
    ) -> bool:
        if self.refuse:
            self.refuse -= 1
            raise StoreUnavailable("the database is down")
        self.bodies.append((json.loads(body), delivery_key, conversation_key))
        self.arrived.set()
        return True

    async def hold(self, name: str, seconds: float) -> bool:
        return True

    async def service_paused(self) -> float:
        return self.pacer.paused_for(service_key(CHANNEL))

    async def pause_service(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.pacer.pause(service_key(CHANNEL), seconds)


def fetching_provider(chatra: FakeChatra, **settings: Any) -> Any:
    return make_provider(base_url=chatra.base_url, **chatra.keys, fetch_client=True, **settings)


async def fetch_until(provider: Any, inbox: Inbox, count: int) -> None:
    """Run the provider's fetcher until ``inbox`` holds ``count`` bodies."""
    task = asyncio.create_task(provider.fetch_updates(inbox))
    try:
        async with asyncio.timeout(10):
            while len(inbox.bodies) < count:
                inbox.arrived.clear()
                await inbox.arrived.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await provider.aclose()


def test_it_is_off_by_default_and_needs_the_api_keys() -> None:
    assert make_provider().fetcher is None
    assert not make_provider().fetches_updates()
    assert not make_provider(fetch_client=True).fetches_updates()  # no keys: nothing to ask
    assert make_provider(fetch_client=True, public_key="p", secret_key="s").fetches_updates()


def test_an_anonymous_visitor_is_asked_for_once(fake_chatra: FakeChatra) -> None:
    provider = fetching_provider(fake_chatra)
    store = MemoryStore()
    with store.transaction() as state:
        assert provider.parse(sample_body("chat_started_anonymous.json"), state)
        provider.parse(sample_body("chat_fragment_client_message.json"), state)
    assert provider.fetcher.pending == [VISITOR]  # once, though two webhooks lacked the name


def test_a_client_with_all_its_data_is_not_asked_for(fake_chatra: FakeChatra) -> None:
    provider = fetching_provider(fake_chatra, client_data=["ip", "country", "city"])
    with MemoryStore().transaction() as state:
        assert provider.parse(sample_body("chat_started_anonymous.json"), state)
    assert provider.fetcher.pending == []


def test_the_fetched_client_goes_to_the_inbox_keyed_by_its_conversation(
    fake_chatra: FakeChatra,
) -> None:
    fake_chatra.add_client(
        VISITOR, basicInfo={"name": "Maria Lopez", "email": "maria@example.org"}, os="Linux"
    )
    provider = fetching_provider(fake_chatra)
    provider.fetcher.want(VISITOR)
    inbox = Inbox()
    asyncio.run(fetch_until(provider, inbox, 1))
    ((body, delivery_key, conversation_key),) = inbox.bodies
    assert body["eventName"] == FETCHED
    assert body["client"]["basicInfo"]["name"] == "Maria Lopez"
    assert conversation_key == VISITOR and delivery_key.startswith(f"client:{VISITOR}:")
    (request,) = fake_chatra.requests
    assert (request.method, request.path) == ("GET", f"/clients/{VISITOR}")


def test_the_fetched_body_updates_the_client_and_says_so(fake_chatra: FakeChatra) -> None:
    provider = fetching_provider(fake_chatra)
    store = MemoryStore()
    with store.transaction() as state:
        provider.parse(sample_body("chat_started_anonymous.json"), state)
    fetched = {
        "eventName": FETCHED,
        "client": {"id": VISITOR, "info": {"name": "Maria Lopez"}, "os": "Linux"},
    }
    with store.transaction() as state:
        (event,) = provider.parse(encode(fetched), state)
        client = state.get_client(CHANNEL, VISITOR)
    assert event.event == "client_updated" and event.client.name == "Maria Lopez"
    assert client is not None and (client.name, client.os, client.city) == (
        "Maria Lopez",
        "Linux",
        "Berlin",  # what the webhook said and Chatra's answer did not repeat stays
    )
    assert provider.fetcher.pending == [VISITOR]  # from the webhook, not from its own body
    with store.transaction() as state:  # the same data again says nothing new
        assert provider.parse(encode(fetched), state) == []


def test_a_client_fetched_after_rulekit_forget_erased_them_is_not_recorded_again(
    fake_chatra: FakeChatra,
) -> None:
    """The fetch a webhook asked for may come after ``rulekit forget`` erased the client (the
    queue is paced, one client per ``interval``): what Chatra answered does not record the
    client's name and the rest again, as if they had written."""
    provider = fetching_provider(fake_chatra)
    store = MemoryStore()
    with store.transaction() as state:
        provider.parse(sample_body("chat_started_anonymous.json"), state)
    with store.transaction() as state:
        state.forget_client(VISITOR)
    fetched = {
        "eventName": FETCHED,
        "client": {"id": VISITOR, "info": {"name": "Maria Lopez", "email": "m@x.io"}},
    }
    with store.transaction() as state:
        assert provider.parse(encode(fetched), state) == []
        assert state.get_client(CHANNEL, VISITOR) is None
    # the client's next webhook records them again, as a new client's would
    with store.transaction() as state:
        provider.parse(sample_body("chat_started_anonymous.json"), state)
        assert state.get_client(CHANNEL, VISITOR) is not None


def test_a_name_fetched_back_and_forth_is_a_change_each_time_with_its_own_id() -> None:
    """A fetched body has no message to tell two fetches of the same answer apart: the second
    change from one name to another had the first one's delivery key and event id, and was
    dropped as a repeat."""
    names = ["Maria Lopez", "Mia Lopez"] * 2

    async def fetch() -> Inbox:
        answers = iter(names)

        async def get_client(client_id: str) -> dict[str, Any]:
            return {"id": client_id, "info": {"name": next(answers)}}

        fetcher = ClientFetcher(["name"], interval=0, ttl=0)
        for _ in names:
            fetcher.want(VISITOR)
        inbox = Inbox()
        task = asyncio.create_task(fetcher.run(inbox, get_client))
        while len(inbox.bodies) < len(names):
            inbox.arrived.clear()
            await inbox.arrived.wait()
        task.cancel()
        return inbox

    inbox = asyncio.run(fetch())
    assert len({delivery_key for _, delivery_key, _ in inbox.bodies}) == len(names)
    provider = make_provider()
    store = MemoryStore()
    with store.transaction() as state:
        provider.parse(sample_body("chat_started_anonymous.json"), state)
    updated = []
    for body, _, _ in inbox.bodies:
        with store.transaction() as state:
            (event,) = provider.parse(encode(body), state)
        with store.transaction() as state:  # the same body again (a redelivery): nothing new
            assert provider.parse(encode(body), state) == []
        updated.append(event)
    assert [(e.event, e.client.name) for e in updated] == [("client_updated", n) for n in names]
    assert len({e.id for e in updated}) == len(names)


def test_an_unknown_client_is_not_fetched_again_and_a_failure_is_retried(
    fake_chatra: FakeChatra,
) -> None:
    fake_chatra.add_client("known", name="Ivan")
    provider = fetching_provider(fake_chatra)
    fetcher: ClientFetcher = provider.fetcher
    fetcher.interval = 0.01
    fake_chatra.fail(503)  # the first call fails: tried again after the others
    for client_id in ("known", "unknown", "unknown"):
        fetcher.want(client_id)
    inbox = Inbox(refuse=1)  # and the store is down once
    asyncio.run(fetch_until(provider, inbox, 1))
    assert [body["client"]["id"] for body, _, _ in inbox.bodies] == ["known"]
    paths = [r.path for r in fake_chatra.requests]
    assert paths == ["/clients/known", "/clients/unknown", "/clients/known", "/clients/known"]


def test_clients_are_asked_for_again_only_after_the_ttl() -> None:
    now = [0.0]
    fetcher = ClientFetcher(["name"], ttl=60, clock=lambda: now[0])
    assert fetcher.want("a") and not fetcher.want("a")
    now[0] = 61
    assert fetcher.want("a")
    assert fetcher.pending == ["a", "a"]


def test_fetches_are_paced() -> None:
    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        times: list[float] = []

        async def get_client(client_id: str) -> dict[str, Any]:
            times.append(loop.time())
            return {"id": client_id}

        fetcher = ClientFetcher(["name"], interval=0.5, clock=loop.time)
        for client_id in ("a", "b", "c"):
            fetcher.want(client_id)
        inbox = Inbox()
        task = asyncio.create_task(fetcher.run(inbox, get_client))
        while len(inbox.bodies) < 3:
            inbox.arrived.clear()
            await inbox.arrived.wait()
        task.cancel()
        return times

    assert run_virtual(run()) == [0.0, 0.5, 1.0]


# one pause for the account: the fetcher and the replies -----------------------------------
def chatra_429(retry_after: str | None) -> RetryableActionError:
    """The error Chatra's API client makes of a 429 (with this Retry-After, if any)."""
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    error = make_api().failure(httpx.Response(429, headers=headers, json={}), "the request")
    assert isinstance(error, RetryableActionError) and error.scope == "service"
    return error


def make_api() -> ChatraAPI:
    return ChatraAPI("http://127.0.0.1:9", "pub", SecretStr("secret"))


REPLY_PACES = [Pace("conversation-1"), Pace(service_key(CHANNEL), scope="service")]
"""What the dispatcher paces a reply of the channel by (its lane, then the account)."""


def fetcher_and_reply(answers: list[RetryableActionError | None], reply_at: float) -> Any:
    """Fetch clients "a", "b" (interval 1 s) on virtual time, answered by ``answers`` in turn
    (None: the client), while a reply asks for its slot at ``reply_at``; returns the fetches'
    and the reply's times, and the inbox."""

    async def run() -> tuple[list[float], float, Inbox]:
        loop = asyncio.get_running_loop()
        pacer = Pacer()
        fetches: list[float] = []

        async def get_client(client_id: str) -> dict[str, Any]:
            fetches.append(loop.time())
            answer = answers.pop(0) if answers else None
            if answer is not None:
                raise answer
            return {"id": client_id}

        fetcher = ClientFetcher(["name"], interval=1.0, clock=loop.time)
        fetcher.want("a")
        fetcher.want("b")
        inbox = Inbox(pacer=pacer)
        task = asyncio.create_task(fetcher.run(inbox, get_client))
        await asyncio.sleep(reply_at)
        async with pacer.acquire(REPLY_PACES):
            replied = loop.time()
        while len(inbox.bodies) < 2:
            inbox.arrived.clear()
            await inbox.arrived.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return fetches, replied, inbox

    return run_virtual(run())


def test_a_429_answered_to_a_fetch_holds_the_replies_for_its_retry_after() -> None:
    fetches, replied, inbox = fetcher_and_reply([chatra_429("5")], reply_at=0.5)
    assert inbox.pauses == [5.0]
    assert replied == 5.0  # not before Chatra's window ends, and not later
    # the fetches wait as long, and one interval more, which the replies have first
    assert fetches == [0.0, 6.0, 7.0]
    assert [body["client"]["id"] for body, _, _ in inbox.bodies] == ["b", "a"]


def test_a_429_without_retry_after_pauses_the_account_for_the_fetch_backoff() -> None:
    fetches, replied, inbox = fetcher_and_reply([chatra_429(None)], reply_at=0.5)
    assert inbox.pauses == [2.0]  # interval * 2, the fetcher's first backoff
    assert replied == 2.0
    assert fetches == [0.0, 3.0, 4.0]


def test_a_fetch_never_holds_a_reply_back_without_a_429() -> None:
    fetches, replied, inbox = fetcher_and_reply([], reply_at=0.5)
    assert replied == 0.5 and inbox.pauses == []
    assert fetches == [0.0, 1.0]


def test_a_429_answered_to_a_reply_holds_the_fetches_back() -> None:
    async def run() -> tuple[list[float], Inbox]:
        loop = asyncio.get_running_loop()
        pacer = Pacer()
        fetches: list[float] = []

        async def get_client(client_id: str) -> dict[str, Any]:
            fetches.append(loop.time())
            return {"id": client_id}

        with contextlib.suppress(RetryableActionError):
            async with pacer.acquire(REPLY_PACES):  # the reply is refused with Retry-After 3
                raise chatra_429("3")
        fetcher = ClientFetcher(["name"], interval=1.0, clock=loop.time)
        fetcher.want("a")
        inbox = Inbox(pacer=pacer)
        task = asyncio.create_task(fetcher.run(inbox, get_client))
        await inbox.arrived.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return fetches, inbox

    fetches, inbox = run_virtual(run())
    assert fetches == [4.0]  # after the reply's window, and one interval for the replies
    assert inbox.pauses == []


def test_a_client_id_the_http_client_would_resolve_away_is_never_a_path() -> None:
    """A website binds visitors with ids of its own choosing: ``GET /clients/..`` went to
    ``GET /`` (and ``.`` to ``/clients/``), a call to another endpoint of the account's API
    whose answer was taken for the client, and ``PUT`` likewise for an agent's change."""
    with FakeChatra() as chatra:
        chatra.add_client("a..b", name="Dots")
        chatra.add_client("...", name="Three dots")

        async def calls() -> list[Any]:
            api = ChatraAPI(chatra.base_url, chatra.public_key, SecretStr(chatra.secret_key))
            out: list[Any] = []
            for client_id in ("..", ".", "%2E%2e", "", "a..b", "..."):
                for call in (
                    api.get_client(client_id, timeout=5),
                    api.update_client(client_id, {"notes": "n"}, timeout=5),
                ):
                    try:
                        out.append((await call).get("name"))
                    except PermanentActionError as exc:
                        out.append(str(exc))
            return out

        answers = asyncio.run(calls())
        paths = [urlsplit(r.path).path for r in chatra.requests]
    refused = [answers[i] for i in range(8)]
    assert all("cannot name a client in a Chatra API call" in a for a in refused), refused
    assert answers[8:] == ["Dots", "Dots", "Three dots", "Three dots"]
    assert paths == ["/clients/a..b"] * 2 + ["/clients/..."] * 2


def test_of_a_fetched_client_only_what_the_channel_takes_is_kept(fake_chatra: FakeChatra) -> None:
    # Chatra's visitor holds more than rulekit reads: the pages of the last visit (a password
    # reset link, an email in a query string), the IP address a channel does not take
    fake_chatra.add_client(
        VISITOR,
        displayedName="Maria Lopez",
        chatId="Kw2twCpXPKBFtP87S",
        basicInfo={"name": "Maria Lopez", "email": "maria@example.org", "phone": "+49 30 1234"},
        integrationData={"email": "maria@example.org", "userId": "48213"},
        ip="203.0.113.54",
        city="Berlin",
        lastVisit={
            "startedAt": 1741943525000,
            "viewedPages": [{"link": "https://shop.example/reset?token=s3cr3t&email=maria%40x"}],
        },
        userAgent="Mozilla/5.0",
    )
    provider = fetching_provider(fake_chatra, client_data=["name", "email", "city", "last_visit"])
    provider.fetcher.want(VISITOR)
    inbox = Inbox()
    asyncio.run(fetch_until(provider, inbox, 1))
    ((body, _, _),) = inbox.bodies
    assert body["client"] == {
        "id": VISITOR,
        "chatId": "Kw2twCpXPKBFtP87S",
        "displayedName": "Maria Lopez",
        "basicInfo": {"name": "Maria Lopez", "email": "maria@example.org"},
        "integrationData": {"email": "maria@example.org"},
        "city": "Berlin",
        "lastVisit": {"startedAt": 1741943525000},
    }
    with MemoryStore().transaction() as state:  # and it reads as the whole answer would
        provider.parse(sample_body("chat_started_anonymous.json"), state)
        (event,) = provider.parse(encode(body), state)
    client = event.client
    assert (client.name, client.email, client.city) == (
        "Maria Lopez",
        "maria@example.org",
        "Berlin",
    )
    assert client.last_visit is not None and client.custom == {} and client.ip is None


def test_with_every_field_taken_a_fetched_client_keeps_what_the_parser_reads(
    fake_chatra: FakeChatra,
) -> None:
    fake_chatra.add_client(
        VISITOR,
        info={"name": "Maria", "Plan": "gold"},
        ip="203.0.113.54",
        chatLanguage="de",
        lastVisit={"startedAt": 1741943525000, "viewedPages": [{"link": "https://x/?t=1"}]},
    )
    provider = fetching_provider(fake_chatra)
    provider.fetcher.want(VISITOR)
    inbox = Inbox()
    asyncio.run(fetch_until(provider, inbox, 1))
    ((body, _, _),) = inbox.bodies
    assert body["client"] == {
        "id": VISITOR,
        "info": {"name": "Maria", "Plan": "gold"},
        "ip": "203.0.113.54",
        "chatLanguage": "de",
        "lastVisit": {"startedAt": 1741943525000},
    }


def test_keys_chatra_refuses_are_a_warning_about_the_keys_not_about_a_client(
    fake_chatra: FakeChatra, caplog: Any
) -> None:
    # "Chatra has no data for a client", at info, hid that no client could ever be fetched
    fake_chatra.add_client(VISITOR, name="Maria")
    provider = make_provider(
        base_url=fake_chatra.base_url, public_key="pubKEY123", secret_key="wrong", fetch_client=True
    )
    provider.fetcher.want(VISITOR)
    provider.fetcher.want("unknown")

    async def run() -> None:
        task = asyncio.create_task(provider.fetch_updates(Inbox()))
        while len(fake_chatra.requests) < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await provider.aclose()

    with caplog.at_level("INFO", logger="rulekit.chatra"):
        asyncio.run(run())
    (record,) = [r for r in caplog.records if "API keys" in r.getMessage()]
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("cannot fetch clients from Chatra: Chatra rejected")
