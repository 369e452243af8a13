"""The simulation's pending timers (``rulekit test``, suites, ``rulekit replay``): earliest due
first, restarts and cancels, ties in the order the keys were set, and a cost that does not grow
with the number of timers pending (a dry run of many conversations with ``after: 1d`` looked
through every pending timer before each input: quadratic)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rulekit.engine.timers import TimerQueue

START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


@dataclass
class Timer:
    name: str
    at: datetime
    reads: list[int] = field(default_factory=lambda: [0])

    @property
    def due(self) -> datetime:
        self.reads[0] += 1
        return self.at


def minutes(n: float) -> datetime:
    return START + timedelta(minutes=n)


def drain(queue: TimerQueue[Timer], until: datetime) -> list[str]:
    out = []
    while (timer := queue.pop_due(until)) is not None:
        out.append(timer.name)
    return out


def test_earliest_first_ties_in_the_order_set_restarts_and_cancels() -> None:
    queue: TimerQueue[Timer] = TimerQueue()
    queue.set(("r", "c1"), Timer("c1", minutes(10)))
    queue.set(("r", "c2"), Timer("c2", minutes(5)))
    queue.set(("r", "c3"), Timer("c3", minutes(10)))
    queue.set(("r", "c4"), Timer("c4", minutes(10)))
    queue.set(("r", "c5"), Timer("c5", minutes(1)))
    queue.set(("r", "c1"), Timer("c1 restarted", minutes(10)))  # keeps c1's place among equals
    queue.set(("r", "c5"), Timer("c5 restarted", minutes(30)))  # its old entry is stale
    queue.cancel(("r", "c4"))
    assert len(queue) == 4 and ("r", "c4") not in queue and ("r", "c2") in queue
    assert queue.pop_due(minutes(4)) is None
    assert drain(queue, minutes(10)) == ["c2", "c1 restarted", "c3"]
    queue.set(("r", "c2"), Timer("c2 again", minutes(30)))  # set anew after it fired: last
    assert drain(queue, minutes(60)) == ["c5 restarted", "c2 again"]
    assert len(queue) == 0 and queue.pop_due(minutes(600)) is None


def test_looking_for_due_timers_does_not_read_every_pending_one() -> None:
    reads = [0]
    queue: TimerQueue[Timer] = TimerQueue()
    n = 5000
    for i in range(n):
        queue.set(("idle", f"c{i}"), Timer(f"c{i}", minutes(24 * 60 + i), reads))
    setting = reads[0]
    for i in range(n):  # an input a second: nothing is due yet
        assert queue.pop_due(START + timedelta(seconds=i)) is None
    assert reads[0] - setting <= 2 * n  # looking through them all each time: n * n reads
    assert drain(queue, minutes(24 * 60 + 2)) == ["c0", "c1", "c2"]


def test_timers_due_in_the_hour_the_clocks_go_back_come_in_real_time_order() -> None:
    """Times of one zone compare on the wall clock: a timer due at the second 02:10 (after
    the clocks went back) came before one due at the first 02:50, 40 minutes earlier."""
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")
    first = datetime(2026, 10, 25, 0, 50, tzinfo=UTC).astimezone(berlin)  # 02:50 CEST
    second = datetime(2026, 10, 25, 1, 10, tzinfo=UTC).astimezone(berlin)  # 02:10 CET
    queue: TimerQueue[Timer] = TimerQueue()
    queue.set(("r", "b"), Timer("second", second))
    queue.set(("r", "a"), Timer("first", first))
    assert drain(queue, datetime(2026, 10, 25, 0, 55, tzinfo=UTC)) == ["first"]
    assert drain(queue, datetime(2026, 10, 25, 2, 0, tzinfo=UTC)) == ["second"]
