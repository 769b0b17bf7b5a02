"""The end-to-end latency histogram."""

from app.stats import LatencyHistogram


def test_values_land_in_cumulative_buckets():
    h = LatencyHistogram((0.01, 0.1))
    h.observe_ms([5, 10, 50, 100, 2_000])
    snap = h.snapshot()
    assert snap["buckets"] == [[0.01, 2], [0.1, 4], ["+Inf", 5]]
    assert snap["count"] == 5 and abs(snap["sum_s"] - 2.165) < 1e-9
