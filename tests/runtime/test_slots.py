"""The dispatcher's call slots follow a reloaded ``dispatcher.concurrency``."""

from __future__ import annotations

import asyncio

from rulekit.runtime.slots import CallSlots


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_a_raised_size_frees_slots_at_once_and_a_lowered_one_holds_back_new_calls():
    async def scenario() -> None:
        slots = CallSlots(1)
        held: list[asyncio.Event] = []
        running: list[int] = []

        async def call(n: int) -> None:
            release = asyncio.Event()
            held.append(release)
            async with slots:
                running.append(n)
                await release.wait()
                running.remove(n)

        tasks = [asyncio.create_task(call(n)) for n in range(4)]
        await settle()
        assert running == [0]
        slots.resize(3)  # two more at once, the first still under way
        await settle()
        assert sorted(running) == [0, 1, 2]
        slots.resize(1)  # no call cut off; none starts until fewer than one are under way
        await settle()
        assert sorted(running) == [0, 1, 2]
        held[0].set()
        held[1].set()
        await settle()
        assert running == [2]  # call 3 waits: one slot, held by call 2
        held[2].set()
        await settle()
        assert running == [3]
        slots.resize(2)
        held[3].set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_a_raise_after_a_lowering_not_yet_applied_counts_once():
    async def scenario() -> None:
        slots = CallSlots(2)
        release = asyncio.Event()
        running = 0

        async def call() -> None:
            nonlocal running
            async with slots:
                running += 1
                await release.wait()
                running -= 1

        first = [asyncio.create_task(call()) for _ in range(2)]
        await settle()
        slots.resize(1)
        slots.resize(2)  # back before any call ended
        release.set()
        await asyncio.gather(*first)
        release.clear()
        more = [asyncio.create_task(call()) for _ in range(3)]
        await settle()
        assert running == 2
        release.set()
        await asyncio.gather(*more)

    asyncio.run(scenario())


def test_a_waiter_cancelled_after_being_handed_a_slot_gives_it_on():
    async def scenario() -> None:
        slots = CallSlots(1)
        got: list[str] = []

        async def call(name: str) -> None:
            async with slots:
                got.append(name)

        await slots.__aenter__()  # the only slot, held here
        second = asyncio.create_task(call("second"))
        third = asyncio.create_task(call("third"))
        await settle()
        await slots.__aexit__(None, None, None)  # handed to "second" (nothing awaited)...
        second.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(second, third, return_exceptions=True)
        assert got == ["third"]
        assert slots.used == 0

    asyncio.run(scenario())
