"""One service that hangs holds up the calls to it, not the calls to every other service.

A service that takes connections and never answers held one of the ``dispatcher.concurrency``
call slots per call until each timed out: a few conversations' replies to it took every slot,
and the calls to every other service waited behind them. Each service now has a share of the
slots (all but a quarter): the rest keeps the other services going.
"""

from __future__ import annotations

import httpx
from daemons import SECRET, chat_fragment, chat_started, wait_for, write_setup

from rulekit.actions.base import DEFAULT_TIMEOUT
from rulekit.actions.pacing import Pace
from rulekit.runtime.slots import CallSlots, ServiceShares, service_of
from rulekit.testing import FakeService, Response

RULES = """\
- name: Greet
  on: {channel: online-chat, event: created}
  do:
    - autoreply: {text: "Hello"}
- name: Tell the billing system
  on: {channel: online-chat, event: message}
  do:
    - webhook: {to: billing}
"""


def test_a_hanging_service_leaves_the_others_their_share_of_the_call_slots(tmp_path, serve, chatra):
    slow = chatra  # takes the replies, answers none until released
    slow.script(*[Response(200, {}, delay=120) for _ in range(8)])
    with FakeService() as billing:
        extra = (
            "integrations:\n  webhooks:\n"
            f"    billing: {{url: '{billing.base_url}/hook', secret: {SECRET}, timeout: 60}}\n"
        )
        config = write_setup(
            tmp_path, RULES, chatra=chatra, extra=extra, dispatcher={"concurrency": 4}
        )
        server = serve(config)
        try:
            for n in range(1, 7):  # six conversations: six calls to the slow service
                assert httpx.post(server.webhook_url, content=chat_started(n)).status_code == 200
            # one conversation each: as many as its share allows are under way, the others wait
            wait_for(lambda: len(slow.requests) >= 3, timeout=60)
            assert httpx.post(server.webhook_url, content=chat_fragment(1, 1)).status_code == 200
            # the billing system is called while the slow service still holds its calls: before
            # the first of them timed out (before, only that timeout freed a slot for it)
            wait_for(lambda: len(billing.requests) == 1, timeout=60)
            assert billing.requests[0].at < slow.requests[0].at + DEFAULT_TIMEOUT
        finally:
            slow.release()
        wait_for(lambda: len(slow.requests) >= 6, timeout=60)


def test_a_service_share_leaves_a_quarter_of_the_slots_and_follows_a_resize():
    slots = CallSlots(32)
    shares = ServiceShares(slots)
    assert shares.limit == 24
    assert all(shares.try_take("service:chatra") for _ in range(24))
    assert not shares.try_take("service:chatra")
    assert shares.try_take("slack")  # another service has room
    assert shares.room() == 0  # the busiest service has no room left: a claim starts none
    slots.resize(3)
    assert ServiceShares(slots).limit == 3  # no quarter to keep apart: one service takes all
    slots.resize(8)
    shares.resized()
    assert shares.limit == 6


def test_the_service_of_a_call_is_its_service_pace_else_its_own_destination_else_the_action():
    bot = Pace("telegram", scope="service")
    chat = Pace("telegram:42")
    assert service_of([chat, bot], [chat, bot], "telegram") == "telegram"
    target = Pace("webhook:crm")
    assert service_of([target], [target], "webhook") == "webhook:crm"
    lane = Pace("online-chat:conv1")
    assert service_of([lane], [], "email") == "email"
