"""Pacing: per-destination limits, pauses from the service, and independence of destinations."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from action_helpers import make_context, run

from rulekit.actions.slack import Slack, SlackIntegration, SlackParams
from rulekit.actions.telegram import Telegram, TelegramIntegration, TelegramParams
from rulekit.errors import PermanentActionError, RetryableActionError
from rulekit.pacing import Limit, Pace, Pacer

TOLERANCE = 0.02  # loopback latency between the pacer's clock and the fake's


async def acquire_times(pacer: Pacer, paces: list[Pace], count: int) -> list[float]:
    times = []
    for _ in range(count):
        async with pacer.acquire(paces):
            times.append(pacer.now())
    return times


def max_in_window(times: list[float], period: float) -> int:
    """The most calls found in any window of ``period`` seconds (less asyncio's timer slack of
    a millisecond: a timer may fire that much early)."""
    times = sorted(times)
    return max(
        sum(1 for t in times[i:] if t < start + period - 1e-3) for i, start in enumerate(times)
    )


def test_a_limit_holds_over_any_window():
    async def scenario():
        pacer = Pacer()
        paces = [Pace("chat", Limit(2, 0.2))]
        return await asyncio.gather(*(acquire_times(pacer, paces, 3) for _ in range(2)))

    times = [t for batch in asyncio.run(scenario()) for t in batch]
    assert max_in_window(times, 0.2) == 2
    assert max(times) - min(times) >= 0.4 - TOLERANCE  # 6 calls, 2 per 0.2 s


def test_waiting_for_one_destination_never_blocks_another():
    async def scenario():
        pacer = Pacer()
        pacer.pause("slow", 0.5)
        start = pacer.now()
        slow = asyncio.create_task(acquire_times(pacer, [Pace("slow")], 1))
        fast = await acquire_times(pacer, [Pace("fast", Limit(1, 0.05))], 4)
        slow_times = await slow
        return start, fast, slow_times

    start, fast, slow = asyncio.run(scenario())
    assert fast[-1] - start < 0.3  # the fast destination did not wait for the slow one
    assert slow[0] - start >= 0.5 - TOLERANCE


def test_calls_to_one_destination_go_in_order_one_at_a_time():
    order: list[int] = []
    inside = 0

    async def call(pacer: Pacer, number: int) -> None:
        nonlocal inside
        async with pacer.acquire([Pace("chat", Limit(100, 1))]):
            inside += 1
            assert inside == 1
            await asyncio.sleep(0.01)
            order.append(number)
            inside -= 1

    async def scenario():
        pacer = Pacer()
        await asyncio.gather(*(call(pacer, n) for n in range(10)))

    asyncio.run(scenario())
    assert order == list(range(10))


def test_a_retry_after_inside_the_block_pauses_only_that_destination():
    async def scenario():
        pacer = Pacer()
        with pytest.raises(RetryableActionError):
            async with pacer.acquire([Pace("a"), Pace("bot", scope="service")]):
                raise RetryableActionError("slow down", retry_after=0.3)
        assert pacer.paused_for("a") > 0.25
        assert pacer.paused_for("bot") == 0
        assert pacer.delay([Pace("b"), Pace("bot", scope="service")]) == 0
        start = pacer.now()
        await acquire_times(pacer, [Pace("a")], 1)
        return pacer.now() - start

    assert asyncio.run(scenario()) >= 0.3 - TOLERANCE


def test_a_service_wide_retry_after_pauses_every_destination_of_the_service():
    async def scenario():
        pacer = Pacer()
        with pytest.raises(RetryableActionError):
            async with pacer.acquire([Pace("a"), Pace("bot", scope="service")]):
                raise RetryableActionError("bot throttled", retry_after=0.3, scope="service")
        assert pacer.delay([Pace("b"), Pace("bot", scope="service")]) > 0.25
        assert pacer.delay([Pace("other-service")]) == 0

    asyncio.run(scenario())


def test_errors_without_retry_after_pause_nothing():
    async def scenario():
        pacer = Pacer()
        for error in (PermanentActionError("no"), RetryableActionError("5xx"), ValueError("x")):
            with pytest.raises(type(error)):
                async with pacer.acquire([Pace("a")]):
                    raise error
        return pacer.paused_for("a")

    assert asyncio.run(scenario()) == 0


def test_idle_keys_are_forgotten_and_cancelled_waits_leave_nothing_behind():
    async def scenario():
        pacer = Pacer()
        for n in range(50):
            async with pacer.acquire([Pace(f"chat{n}", Limit(1, 0.01)), Pace("bot")]):
                pass
        await asyncio.sleep(0.02)
        async with pacer.acquire([Pace("last")]):
            pass
        assert len(pacer) <= 52
        pacer.pause("stuck", 10)
        waiter = asyncio.create_task(acquire_times(pacer, [Pace("stuck")], 1))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert pacer._keys["stuck"].users == 0

    asyncio.run(scenario())


def test_no_paces_means_no_waiting():
    async def scenario():
        pacer = Pacer()
        async with pacer.acquire([]) as slot:
            slot.report(RetryableActionError("x", retry_after=5))
        return len(pacer)

    assert asyncio.run(scenario()) == 0


# end to end: the real SDKs, the fake services, a minimal dispatcher ---------------------------


async def deliver(pacer: Pacer, action, params, attempts: int = 3) -> dict:
    """What the daemon's dispatcher does, minus durability: pace, execute, retry."""
    for attempt in range(attempts):
        try:
            async with pacer.acquire(action.pacing(params)):
                return await action.execute(params, make_context())
        except RetryableActionError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def test_telegram_flood_control_pauses_only_that_chat(fake_telegram):
    limits = {"chat": Limit(1, 0.05), "group": Limit(20, 60), "bot": Limit(1000, 1)}
    action = Telegram(
        TelegramIntegration(token=fake_telegram.token, base_url=fake_telegram.base_url),
        limits=limits,
    )
    fake_telegram.flood(retry_after=1, chat=5)

    async def scenario():
        pacer = Pacer()
        await action.execute(TelegramParams(chat_id=0, text="warm up"), make_context())
        flooded = [
            deliver(pacer, action, TelegramParams(chat_id=5, text=f"a{n}")) for n in range(2)
        ]
        others = [deliver(pacer, action, TelegramParams(chat_id=6, text=f"b{n}")) for n in range(8)]
        return await asyncio.gather(*flooded, *others)

    results = run(action, scenario)
    assert len(results) == 10
    to_5 = fake_telegram.messages(chat=5)
    to_6 = fake_telegram.messages(chat=6)
    flood_at = to_5[0].at
    assert to_5[0].status == 429
    # nothing to chat 5 inside its window, and both of its messages arrived after it
    # (a retry joins the back of the chat's queue: ordering across retries is the dispatcher's)
    assert sorted(m.text for m in to_5) == ["a0", "a0", "a1"]
    assert all(m.at >= flood_at + 1 - TOLERANCE for m in to_5[1:])
    # chat 6 kept flowing at its own pace during chat 5's window
    assert len(to_6) == 8 and all(m.status == 200 for m in to_6)
    assert to_6[-1].at < flood_at + 1
    gaps = [b.at - a.at for a, b in itertools.pairwise(to_6)]
    assert min(gaps) >= 0.05 - TOLERANCE


def test_telegram_bot_wide_flood_pauses_every_chat(fake_telegram):
    limits = {"chat": Limit(1, 0.02), "group": Limit(20, 60), "bot": Limit(1000, 1)}
    action = Telegram(
        TelegramIntegration(token=fake_telegram.token, base_url=fake_telegram.base_url),
        limits=limits,
    )

    async def scenario():
        pacer = Pacer()
        await action.execute(TelegramParams(chat_id=0, text="warm up"), make_context())
        fake_telegram.flood(retry_after=1, chat=1)
        fake_telegram.flood(retry_after=1, chat=2)
        # two chats throttled at once: the bot as a whole is
        await asyncio.gather(
            *(deliver(pacer, action, TelegramParams(chat_id=c, text="x")) for c in (1, 2))
        )

    run(action, scenario)
    floods = [m for m in fake_telegram.messages() if m.status == 429]
    assert len(floods) == 2
    second_flood = max(m.at for m in floods)
    later = [m for m in fake_telegram.messages() if m.at > second_flood]
    assert later and all(m.at >= second_flood + 1 - TOLERANCE for m in later)


def test_slack_retry_after_pauses_the_channel_not_the_others(fake_slack):
    action = Slack(
        SlackIntegration(token=fake_slack.token, base_url=fake_slack.base_url),
        limits={"channel": Limit(1, 0.05)},
    )
    fake_slack.rate_limit(retry_after=0.5, channel="C1")

    async def scenario():
        pacer = Pacer()
        jobs = [deliver(pacer, action, SlackParams(channel="C1", text=f"c1-{n}")) for n in range(3)]
        jobs += [
            deliver(pacer, action, SlackParams(channel="C2", text=f"c2-{n}")) for n in range(5)
        ]
        return await asyncio.gather(*jobs)

    run(action, scenario)
    c1 = fake_slack.messages("C1")
    c2 = fake_slack.messages("C2")
    limited_at = c1[0].at
    assert c1[0].status == 429 and all(m.at >= limited_at + 0.5 - TOLERANCE for m in c1[1:])
    assert sorted(m.text for m in c1 if m.status == 200) == ["c1-0", "c1-1", "c1-2"]
    assert len(c2) == 5 and c2[-1].at < limited_at + 0.5
    gaps = [b.at - a.at for a, b in itertools.pairwise(c2)]
    assert min(gaps) >= 0.05 - TOLERANCE
