"""The end-to-end latency histogram and the event loop's lag."""

import asyncio

from app.stats import LOOP_LAG_BUCKETS_S, LatencyHistogram, watch_loop_lag


def test_values_land_in_cumulative_buckets():
    h = LatencyHistogram((0.01, 0.1))
    h.observe_ms([5, 10, 50, 100, 2_000])
    snap = h.snapshot()
    assert snap["buckets"] == [[0.01, 2], [0.1, 4], ["+Inf", 5]]
    assert snap["count"] == 5 and abs(snap["sum_s"] - 2.165) < 1e-9


async def test_loop_lag_counts_how_late_each_wake_up_came():
    times = iter([0.0, 0.032, 1.0, 1.0205])  # woke 12 ms, then 0.5 ms past the 20 ms tick
    histogram = LatencyHistogram(LOOP_LAG_BUCKETS_S)

    def clock() -> float:
        return next(times, 5.0)

    task = asyncio.create_task(watch_loop_lag(histogram, tick_s=0.02, clock=clock))
    while histogram.count < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    buckets = dict(map(tuple, histogram.snapshot()["buckets"]))
    assert buckets[0.001] == 1  # the 0.5 ms one
    assert buckets[0.01] == 1 and buckets[0.025] == 2  # the 12 ms one
