"""The simulator's clock follows the records it yields, never ahead of the send rate."""

from __future__ import annotations

import itertools

from producer.simulator import Simulator


def test_clock_advances_one_step_per_record() -> None:
    sim = Simulator(500, seed=42, start_ms=0, step_ms=5.0, late_ratio=0.05, bad_ratio=0.02)
    items = list(itertools.islice(sim, 50_000))
    assert sim.clock == 50_000 * 5.0
    for n, item in enumerate(items, start=1):
        if isinstance(item.value, dict):
            assert item.value["event_time"] <= n * 5.0


def test_late_events_lag_by_at_least_the_lateness() -> None:
    sim = Simulator(100, seed=1, start_ms=10**12, step_ms=10.0, lateness_ms=180_000)
    late = 0
    for item in itertools.islice(sim, 20_000):
        if item.late:
            late += 1
            assert item.value["event_time"] <= sim.clock - 180_000
    assert late > 500
