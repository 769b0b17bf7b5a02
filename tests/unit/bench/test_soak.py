"""The soak's RSS figures from its samples (no broker)."""

from __future__ import annotations

from bench.soak import rss_growth, rss_medians


def samples(rss: list[float], every_s: int = 10) -> list[dict]:
    return [{"t_s": (i + 1) * every_s, "rss_mb": v} for i, v in enumerate(rss)]


def test_medians_of_each_five_minutes():
    # 10 s apart: samples at 10..290 s are the first window, 300..590 s the second
    rss = [100.0] * 29 + [200.0] * 30 + [300.0] * 5
    assert rss_medians(samples(rss)) == [100.0, 200.0, 300.0]


def test_growth_is_a_trend_not_a_spike_in_the_last_sample():
    flat = [400.0 + (i % 3) for i in range(180)]  # 30 minutes around 401 MB
    spiked = [*flat[:-1], 570.0]
    assert rss_growth(samples(flat)) == 0.0
    assert rss_growth(samples(spiked)) == 0.0
    # the single-sample figure it replaces would say +42%
    assert spiked[-1] / spiked[29] - 1 > 0.4


def test_growth_counts_from_minute_five():
    warming = [100.0 + i for i in range(29)]  # the first five minutes do not count
    rising = [400.0] * 30 + [420.0] * 90 + [480.0] * 30
    assert rss_growth(samples(warming + rising)) == 0.2


def test_no_growth_figure_before_minute_five():
    assert rss_growth(samples([100.0] * 29)) is None
