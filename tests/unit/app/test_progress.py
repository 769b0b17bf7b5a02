"""A partition with records waiting and no progress is reported stuck, once."""

from __future__ import annotations

import logging

from app.progress import ProgressWatch


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_partition_with_lag_and_no_progress_is_stuck_after_the_time_given(caplog):
    clock = Clock()
    watch = ProgressWatch("source", 60, clock)
    watch.observe(0, 100, 5)
    watch.observe(1, 50, 0)
    clock.now = 59
    watch.observe(0, 100, 5)
    assert watch.stuck() == []
    clock.now = 61
    with caplog.at_level(logging.INFO):
        watch.observe(0, 100, 7)
        watch.observe(0, 100, 7)
        watch.observe(1, 50, 0)  # nothing to do is not stuck
    [stuck] = watch.stuck()
    assert (stuck.partition, stuck.offset, stuck.lag, stuck.for_s) == (0, 100, 7, 61)
    said = [r.message for r in caplog.records if "stuck at offset 100" in r.message]
    assert len(said) == 1  # once, not every turn

    with caplog.at_level(logging.INFO):
        watch.observe(0, 101, 6)  # it moved
    assert watch.stuck() == []
    assert any("moves again" in r.message for r in caplog.records)


def test_a_partition_that_caught_up_starts_its_time_again():
    clock = Clock()
    watch = ProgressWatch("stateful", 60, clock)
    watch.observe(3, 10, 0)
    clock.now = 99
    watch.observe(3, 10, 0)  # the stage looks every turn: nothing to do until now
    clock.now = 100
    watch.observe(3, 10, 2)  # records arrived just now
    assert watch.stuck() == []
    watch.forget({3})
    clock.now = 500
    assert watch.stuck() == []
