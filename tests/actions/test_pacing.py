"""Pacing: per-destination limits, pauses from the service, and independence of destinations.

The pacer's own rules are tested on virtual time (:mod:`rulekit.testing.clock`), where they
hold exactly. End to end, times are those the fake services recorded; the pacer only ever
delays a call, so a limit holds at the fake to within :data:`TIMER_SLACK`, whatever the load.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest
from action_helpers import make_context, run

from rulekit.actions.pacing import Limit, Pace, Pacer
from rulekit.actions.slack import Slack, SlackIntegration, SlackParams
from rulekit.actions.telegram import Telegram, TelegramIntegration, TelegramParams
from rulekit.errors import PermanentActionError, RetryableActionError
from rulekit.testing.clock import run_virtual

TIMER_SLACK = 0.001
"""How early asyncio may fire a timer (its clock resolution, rounded up): the only way a call can
reach a fake service before the end of a pause or window measured on the same monotonic clock,
since the fake records a request before it answers and the pacer counts from the answer."""


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

    times = [t for batch in run_virtual(scenario()) for t in batch]
    assert max_in_window(times, 0.2) == 2
    assert sorted(times) == pytest.approx([0, 0, 0.2, 0.2, 0.4, 0.4])  # 6 calls, 2 per 0.2 s


def test_waiting_for_one_destination_never_blocks_another():
    async def scenario():
        pacer = Pacer()
        pacer.pause("slow", 0.5)
        start = pacer.now()
        slow = asyncio.create_task(acquire_times(pacer, [Pace("slow")], 1))
        fast = await acquire_times(pacer, [Pace("fast", Limit(1, 0.05))], 4)
        slow_times = await slow
        return start, fast, slow_times

    start, fast, slow = run_virtual(scenario())
    # the fast destination went at its own pace while the slow one waited out its pause
    assert [t - start for t in fast] == pytest.approx([0, 0.05, 0.1, 0.15])
    assert [t - start for t in slow] == pytest.approx([0.5])


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

    assert run_virtual(scenario()) == pytest.approx(0.3)


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


async def deliver(pacer: Pacer, action, params, attempts: int = 3, on_retry=None) -> dict:
    """What the daemon's dispatcher does, minus durability: pace, execute, retry.
    ``on_retry()`` runs right after a retryable failure, before anything else may run."""
    for attempt in range(attempts):
        try:
            async with pacer.acquire(action.pacing(params)):
                return await action.execute(params, make_context())
        except RetryableActionError:
            if on_retry is not None:
                on_retry()
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def pauses(pacer: Pacer, paces: list[Pace]) -> list[float]:
    """The pause left on each of ``paces`` (0: not paused)."""
    return [pacer.paused_for(pace.key) for pace in paces]


def test_telegram_flood_control_pauses_only_that_chat(fake_telegram):
    limits = {"chat": Limit(1, 0.05), "group": Limit(20, 60), "bot": Limit(1000, 1)}
    action = Telegram(
        TelegramIntegration(token=fake_telegram.token, base_url=fake_telegram.base_url),
        limits=limits,
    )
    fake_telegram.flood(retry_after=1, chat=5)
    seen: list[tuple[list[float], list[float]]] = []  # chat 5's and chat 6's pauses at the 429

    async def scenario():
        pacer = Pacer()

        def refused() -> None:
            paces_5 = action.pacing(TelegramParams(chat_id=5, text="x"))
            seen.append((pauses(pacer, paces_5), pauses(pacer, action.pacing(to_chat_6))))

        to_chat_6 = TelegramParams(chat_id=6, text="x")
        await action.execute(TelegramParams(chat_id=0, text="warm up"), make_context())
        flooded = [
            deliver(pacer, action, TelegramParams(chat_id=5, text=f"a{n}"), on_retry=refused)
            for n in range(2)
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
    assert all(m.at >= flood_at + 1 - TIMER_SLACK for m in to_5[1:])
    # the flood paused chat 5 only: neither chat 6 nor the bot as a whole
    [(chat_5, chat_6)] = seen
    assert chat_5[0] > 0 and chat_5[1:] == [0] and chat_6 == [0, 0]
    # and chat 6 went at its own pace
    assert len(to_6) == 8 and all(m.status == 200 for m in to_6)
    gaps = [b.at - a.at for a, b in itertools.pairwise(to_6)]
    assert min(gaps) >= 0.05 - TIMER_SLACK


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
    assert later and all(m.at >= second_flood + 1 - TIMER_SLACK for m in later)


def test_slack_retry_after_pauses_the_channel_not_the_others(fake_slack):
    action = Slack(
        SlackIntegration(token=fake_slack.token, base_url=fake_slack.base_url),
        limits={"channel": Limit(1, 0.05)},
    )
    fake_slack.rate_limit(retry_after=0.5, channel="C1")
    seen: list[tuple[list[float], list[float]]] = []  # C1's and C2's pauses at the 429

    async def scenario():
        pacer = Pacer()

        def refused() -> None:
            c1, c2 = (action.pacing(SlackParams(channel=c, text="x")) for c in ("C1", "C2"))
            seen.append((pauses(pacer, c1), pauses(pacer, c2)))

        jobs = [
            deliver(pacer, action, SlackParams(channel="C1", text=f"c1-{n}"), on_retry=refused)
            for n in range(3)
        ]
        jobs += [
            deliver(pacer, action, SlackParams(channel="C2", text=f"c2-{n}")) for n in range(5)
        ]
        return await asyncio.gather(*jobs)

    run(action, scenario)
    c1 = fake_slack.messages("C1")
    c2 = fake_slack.messages("C2")
    limited_at = c1[0].at
    assert c1[0].status == 429 and all(m.at >= limited_at + 0.5 - TIMER_SLACK for m in c1[1:])
    assert sorted(m.text for m in c1 if m.status == 200) == ["c1-0", "c1-1", "c1-2"]
    # the 429 paused C1 only, not C2 nor Slack as a whole; C2 went at its own pace
    [(paused_c1, paused_c2)] = seen
    assert paused_c1[0] > 0 and paused_c1[1:] == [0] and paused_c2 == [0, 0]
    assert len(c2) == 5 and all(m.status == 200 for m in c2)
    gaps = [b.at - a.at for a, b in itertools.pairwise(c2)]
    assert min(gaps) >= 0.05 - TIMER_SLACK


def test_slack_limits_on_two_channels_at_once_pause_every_channel(fake_slack):
    """Slack does not say what a 429 throttles; two channels refused within one Retry-After
    window mean the app as a whole: then every channel (one never refused too) pauses."""
    action = Slack(
        SlackIntegration(token=fake_slack.token, base_url=fake_slack.base_url),
        limits={"channel": Limit(1, 0.02)},
    )
    fake_slack.rate_limit(retry_after=3, channel="C1")  # a window far wider than the gap
    fake_slack.rate_limit(retry_after=3, channel="C2")  # between the two concurrent calls
    seen: list[list[float]] = []  # C3's pauses at each refusal

    async def scenario():
        pacer = Pacer()

        def refused() -> None:
            seen.append(pauses(pacer, action.pacing(SlackParams(channel="C3", text="x"))))

        await asyncio.gather(
            *(
                deliver(pacer, action, SlackParams(channel=c, text="x"), on_retry=refused)
                for c in ("C1", "C2")
            )
        )

    run(action, scenario)
    first, second = seen
    assert first == [0, 0]  # one channel limited: only that channel waits
    assert second[0] == 0 and second[1] > 0  # two at once: the whole app waits


def test_an_acquisition_is_made_only_when_entered():
    pacer = Pacer()
    acquisition = pacer.acquire([Pace("a", Limit(1, 10))])  # no event loop yet: nothing done
    assert len(pacer) == 0

    async def scenario():
        async with acquisition:
            return pacer.delay([Pace("a", Limit(1, 10))])

    assert asyncio.run(scenario()) > 9
