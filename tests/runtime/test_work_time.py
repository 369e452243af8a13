"""What /healthz calls a dispatcher stall: lanes at work, not lanes waiting what a service asked.

A lane waiting out a Retry-After or a rate limit for longer than ``server.stall_after`` is not
stalled, and neither is it the moment it goes on after the wait (a store call to start the
call): only time some lane spends working without an attempt being recorded counts."""

from __future__ import annotations

from pytest import approx

from rulekit.runtime.lanes import WorkTime


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_time_waiting_is_not_counted_and_work_after_it_starts_from_nothing():
    clock = Clock()
    work = WorkTime(clock)
    work.start()  # a lane is created
    clock.now += 0.2
    work.stop()  # it waits out a Retry-After of 6 s
    clock.now += 6
    assert work.seconds() == approx(0.2)
    work.start()  # back at work: a store call before the call
    clock.now += 0.01
    assert work.seconds() == approx(0.21)


def test_two_lanes_working_at_once_count_once_and_progress_starts_the_count_again():
    clock = Clock()
    work = WorkTime(clock)
    work.start()
    work.start()
    clock.now += 2
    assert work.seconds() == approx(2)  # not 4: the dispatcher made no progress for 2 s
    work.progress()
    clock.now += 0.5
    assert work.seconds() == approx(0.5)
    work.stop()
    work.stop()  # both wait, or ended
    clock.now += 30
    assert work.seconds() == approx(0.5)


def test_a_lane_failing_again_and_again_keeps_counting():
    """A lane that fails unexpectedly pauses without waiting a service's turn: it works on,
    records nothing, and shows as stalled once that lasts past the limit."""
    clock = Clock()
    work = WorkTime(clock)
    work.start()
    for _ in range(10):
        work.stop()  # the pacer lets it through at once
        work.start()
        clock.now += 0.3  # the store refuses; a pause before trying again
    assert work.seconds() == approx(3.0)
