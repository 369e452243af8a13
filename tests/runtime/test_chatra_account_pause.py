"""One Chatra account, one pause: a 429 Chatra answers to the client fetcher (``fetch_client``)
holds back the replies, and one answered to a reply holds back the fetcher, for the Retry-After
Chatra gave; after it every call goes through, once. Channels with the same API keys (two sites'
widgets of one account) share the pause; channels with other keys do not.

A real daemon, the fake Chatra on loopback. A call's time is when the fake received it; the
pause starts when the daemon received the 429, after the fake recorded it, so a call held back
arrives no earlier than the 429's time plus the Retry-After (less an event loop timer's
resolution). Each step waits until the daemon's pacer holds the pause before the next webhook,
so no call is on its way while the 429 is."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemons import (
    SECRET,
    Server,
    chat_fragment,
    chat_started,
    read,
    wait_for,
    write_setup,
)
from rulekit_chatra.fetch import INTERVAL
from rulekit_chatra.testing import FakeChatra

from rulekit.actions.pacing import service_key
from rulekit.testing.fakehttp import RecordedRequest

RETRY_AFTER = 3
BACKOFF = 3.0
"""The dispatcher's backoff (``backoff_base`` and ``backoff_max``): a first retry waits
``uniform(0, 3)``, drawn from a seeded generator the test draws from too."""
SEED = 0
"""A seed whose first draw is far from 0 (about 2.5 s)."""
TIMER_RESOLUTION = 0.01
"""How early an event loop timer may fire (asyncio's clock resolution, with margin)."""

REPLY_ON_HELP = """\
- name: Help
  on: {channel: online-chat, event: [created, message]}
  if: [message.text == 'help']
  do:
    - autoreply: {text: "We are on it"}
"""


def client_id(n: int) -> str:
    return f"client{n:08d}"


def fetches(chatra: FakeChatra, n: int | None = None) -> list[RecordedRequest]:
    """The ``GET /clients/{id}`` requests received (of client ``n``), in order."""
    path = "/clients/" if n is None else f"/clients/{client_id(n)}"
    return [r for r in chatra.requests if r.method == "GET" and path in r.path]


def replies(chatra: FakeChatra) -> list[RecordedRequest]:
    """The ``POST /messages/`` requests received, in order."""
    return [r for r in chatra.requests if r.method == "POST"]


def paused(server: Server, channel: str = "online-chat") -> float:
    """Seconds left of the pause of the channel's Chatra account in the daemon's pacer."""
    account = server.daemon.snapshot.providers[channel].service_account

    async def read() -> float:
        assert server.daemon.dispatcher is not None
        return server.daemon.dispatcher.pacer.paused_for(service_key(account))

    return float(server.call(read()))


def wait_for_the_pause(server: Server, channel: str = "online-chat") -> None:
    """Wait until the daemon holds the channel's pause (it got the 429's answer)."""

    def the_channel_is_paused() -> bool:
        return paused(server, channel) > 0

    wait_for(the_channel_is_paused)


def post(server: Server, body: bytes, channel: str = "online-chat") -> None:
    url = f"{server.url}/webhooks/{channel}/{SECRET}"
    assert httpx.post(url, content=body).status_code == 200


def start(tmp_path: Any, serve: Any, chatra: FakeChatra, clients: int) -> Server:
    for n in range(1, clients + 1):
        chatra.add_client(client_id(n), basicInfo={"name": f"Known {n}"})
    setup = write_setup(
        tmp_path,
        REPLY_ON_HELP,
        chatra=chatra,
        fetch_client=True,
        dispatcher={"backoff_base": BACKOFF, "backoff_max": BACKOFF},
    )
    server = serve(setup)
    assert server.daemon.dispatcher is not None
    server.daemon.dispatcher.rng = random.Random(SEED)
    return server


def held_back(
    calls: list[RecordedRequest], limited: RecordedRequest, window: float = RETRY_AFTER
) -> None:
    """Every call in ``calls`` arrived after the ``window`` (seconds) of the 429 ``limited``."""
    for call in calls:
        assert call.at >= limited.at + window - TIMER_RESOLUTION, (
            call.method,
            call.path,
            call.at - limited.at,
        )


@pytest.mark.parametrize(
    ("retry_after", "window"),
    # without one: the fetch's backoff
    [(RETRY_AFTER, RETRY_AFTER), pytest.param(None, 2 * INTERVAL, marks=pytest.mark.slow)],
)
def test_a_429_answered_to_the_fetcher_holds_back_the_replies(
    tmp_path, serve, chatra, retry_after, window
):
    chatra.rate_limit(retry_after, method="GET")
    server = start(tmp_path, serve, chatra, clients=2)
    post(server, chat_started(1))  # no reply; the client is fetched: 429
    (limited,) = wait_for(lambda: fetches(chatra, 1))
    wait_for_the_pause(server)
    post(server, chat_started(2, "help"))  # a reply, in the fetcher's window
    wait_for(lambda: len(read(tmp_path, lambda s: s.jobs(status="done"))) == 1, timeout=30)

    (reply,) = replies(chatra)
    held_back([reply], limited, window)
    # fetching comes after the replies: none in the window, and the reply before the next
    later = wait_for(lambda: fetches(chatra)[1:])
    held_back(later, limited, window)
    assert reply.at < later[0].at


@pytest.mark.parametrize(
    ("retry_after", "window"),
    # without one: the reply's retry backoff, as the dispatcher draws it
    [
        (RETRY_AFTER, RETRY_AFTER),
        pytest.param(None, random.Random(SEED).uniform(0, BACKOFF), marks=pytest.mark.slow),
    ],
)
def test_a_429_answered_to_a_reply_holds_back_the_fetcher(
    tmp_path, serve, chatra, retry_after, window
):
    server = start(tmp_path, serve, chatra, clients=2)
    post(server, chat_started(1))
    wait_for(lambda: fetches(chatra, 1))  # client 1 is fetched before the reply
    chatra.rate_limit(retry_after, method="POST")
    post(server, chat_fragment(1, 1, "help"))  # the reply meets the 429
    (limited,) = wait_for(lambda: replies(chatra))
    wait_for_the_pause(server)
    post(server, chat_started(2))  # client 2 wants fetching, in the reply's window
    fetched = wait_for(lambda: fetches(chatra, 2), timeout=30)

    held_back(fetched, limited, window)
    wait_for(lambda: len(read(tmp_path, lambda s: s.jobs(status="done"))) == 1, timeout=30)
    assert [r.json["clientId"] for r in replies(chatra)] == [client_id(1)] * 2


@pytest.mark.slow
def test_after_either_pause_every_reply_and_fetch_goes_through_once(tmp_path, serve, chatra):
    """Both ways in one run: the fetcher's 429 holds the replies, then a reply's 429 holds the
    fetcher; every reply is sent once, every client's data arrives, none in a window."""
    server = start(tmp_path, serve, chatra, clients=3)
    # the fetcher meets a 429; a reply and another client's fetch wait for it
    chatra.rate_limit(RETRY_AFTER, method="GET")
    post(server, chat_started(1))
    (first,) = wait_for(lambda: fetches(chatra, 1))
    wait_for_the_pause(server)
    post(server, chat_fragment(1, 1, "help"))
    post(server, chat_started(2))
    wait_for(lambda: len(fetches(chatra, 1)) == 2 and fetches(chatra, 2) and replies(chatra))
    held_back([*fetches(chatra)[1:], *replies(chatra)], first)
    # then a reply meets a 429; the retry of it and a third client's fetch wait for it
    chatra.rate_limit(RETRY_AFTER, method="POST")
    post(server, chat_fragment(2, 1, "help"))
    second = wait_for(lambda: replies(chatra)[1:])[0]
    wait_for_the_pause(server)
    post(server, chat_started(3))
    wait_for(lambda: len(read(tmp_path, lambda s: s.jobs(status="done"))) == 2, timeout=30)
    wait_for(lambda: fetches(chatra, 3))
    held_back([r for r in chatra.requests if r.at > second.at], second)

    assert [r.json["clientId"] for r in replies(chatra)] == [
        client_id(1),
        client_id(2),  # the 429
        client_id(2),
    ]
    assert [len(fetches(chatra, n)) for n in (1, 2, 3)] == [2, 1, 1]

    def names(state: Any) -> list[str | None]:
        found = [state.get_client("online-chat", client_id(n)) for n in (1, 2, 3)]
        return [client.name if client else None for client in found]

    assert wait_for(lambda: read(tmp_path, names) == ["Known 1", "Known 2", "Known 3"])


# two channels ---------------------------------------------------------------------------------

SHOP = "shop-chat"
"""A second site's widget: another channel, with the same Chatra keys or other ones."""


def chatra_channel(name: str, chatra: FakeChatra) -> str:
    return (
        f"  {name}:\n"
        "    provider: chatra\n"
        f"    webhook_secret: {SECRET}\n"
        "    default_group: support\n"
        f"    base_url: {chatra.base_url}\n"
        f"    public_key: {chatra.public_key}\n"
        f"    secret_key: {chatra.secret_key}\n"
        "    default_agent_id: agent0001\n"
        "    fetch_client: true\n"
    )


def start_two(tmp_path: Path, serve: Any, chatra: FakeChatra, shop: FakeChatra) -> Server:
    """A daemon with ``online-chat`` on ``chatra``'s keys and ``shop-chat`` on ``shop``'s,
    replying to 'help' on both; clients 1 to 4 are known to both fakes."""
    for fake in {id(chatra): chatra, id(shop): shop}.values():
        for n in range(1, 5):
            fake.add_client(client_id(n), basicInfo={"name": f"Known {n}"})
    (tmp_path / "rules.d").mkdir(exist_ok=True)
    (tmp_path / "rules.d" / "rules.yaml").write_text(
        REPLY_ON_HELP + REPLY_ON_HELP.replace("Help", "Shop help").replace("online-chat", SHOP)
    )
    settings = {"backoff_base": BACKOFF, "backoff_max": BACKOFF}
    config = tmp_path / "rulekit.yaml"
    config.write_text(
        "rules: rules.d\n"
        "storage: sqlite:///rulekit.sqlite3\n"
        "channels:\n"
        f"{chatra_channel('online-chat', chatra)}{chatra_channel(SHOP, shop)}"
        "groups: [support]\n"
        "agents:\n"
        f"  - {{email: anna@example.com, groups: [support], channels: [online-chat, {SHOP}]}}\n"
        f"dispatcher: {json.dumps(settings)}\n"
    )
    server = serve(config)
    assert server.daemon.dispatcher is not None
    server.daemon.dispatcher.rng = random.Random(SEED)
    return server


def done(tmp_path: Path) -> int:
    return len(read(tmp_path, lambda s: s.jobs(status="done")))


def test_a_429_on_one_channel_holds_the_replies_of_another_with_the_same_keys(
    tmp_path, serve, chatra
):
    server = start_two(tmp_path, serve, chatra, chatra)
    post(server, chat_started(1))
    post(server, chat_started(2), SHOP)
    wait_for(lambda: fetches(chatra, 1) and fetches(chatra, 2))  # no fetch left to come
    chatra.rate_limit(RETRY_AFTER, method="POST")
    post(server, chat_fragment(1, 1, "help"))  # online-chat's reply meets the 429
    (limited,) = wait_for(lambda: replies(chatra))
    wait_for_the_pause(server, SHOP)  # the shop's account is the same one
    post(server, chat_fragment(2, 1, "help"), SHOP)
    wait_for(lambda: done(tmp_path) == 2, timeout=30)

    held_back(replies(chatra)[1:], limited)
    assert sorted(r.json["clientId"] for r in replies(chatra)[1:]) == [
        client_id(1),
        client_id(2),
    ]


@pytest.mark.slow
def test_channels_with_other_keys_are_not_held_by_each_others_429(tmp_path, serve, chatra):
    long_window = 10 * RETRY_AFTER  # the shop's reply comes well within it
    with FakeChatra("otherPUB987", "otherSECRET654") as shop:
        server = start_two(tmp_path, serve, chatra, shop)
        post(server, chat_started(1))
        post(server, chat_started(2), SHOP)
        wait_for(lambda: fetches(chatra, 1) and fetches(shop, 2))
        chatra.rate_limit(long_window, method="POST")
        post(server, chat_fragment(1, 1, "help"))
        (limited,) = wait_for(lambda: replies(chatra))
        wait_for_the_pause(server)
        assert paused(server, SHOP) == 0  # the shop's account is not paused
        post(server, chat_fragment(2, 1, "help"), SHOP)
        (reply,) = wait_for(lambda: replies(shop), timeout=long_window)

        assert reply.at < limited.at + long_window - TIMER_RESOLUTION
        assert reply.json["clientId"] == client_id(2)


# online-chat's fetcher, or its reply
@pytest.mark.slow
@pytest.mark.parametrize("limited_by", [pytest.param("GET", marks=pytest.mark.slow), "POST"])
def test_the_fetcher_of_another_channel_with_the_same_keys_obeys_the_pause(
    tmp_path, serve, chatra, limited_by
):
    server = start_two(tmp_path, serve, chatra, chatra)
    if limited_by == "POST":
        post(server, chat_started(1))
        wait_for(lambda: fetches(chatra, 1))
        chatra.rate_limit(RETRY_AFTER, method="POST")
        post(server, chat_fragment(1, 1, "help"))
        (limited,) = wait_for(lambda: replies(chatra))
    else:
        chatra.rate_limit(RETRY_AFTER, method="GET")
        post(server, chat_started(1))
        (limited,) = wait_for(lambda: fetches(chatra, 1))
    wait_for_the_pause(server, SHOP)
    post(server, chat_started(3), SHOP)  # the shop's fetcher wants client 3, in the window
    fetched = wait_for(lambda: fetches(chatra, 3), timeout=30)

    held_back(fetched, limited)
