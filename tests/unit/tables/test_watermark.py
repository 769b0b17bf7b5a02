"""Source stream time, lateness at the source, and the merged watermark.

The rules: docs/contract.md, Watermark, Lateness and Idle partitions.
"""

from tables.watermark import NO_TIME, MergedWatermark, SourceClock

MIN = 60_000
LATENESS = 2 * MIN
T = 1_769_679_060_000  # 2026-01-29T09:31:00Z


def clock_at(t: int) -> SourceClock:
    clock = SourceClock(LATENESS)
    assert clock.observe(t) is False
    return clock


# -- SourceClock ---------------------------------------------------------------


def test_fresh_clock_has_no_watermark_and_the_first_event_is_on_time():
    clock = SourceClock(LATENESS)
    assert clock.watermark == NO_TIME
    assert clock.observe(0) is False
    assert clock.stream_time == 0


def test_watermark_is_stream_time_minus_lateness():
    assert clock_at(T).watermark == T - LATENESS


def test_event_exactly_at_the_watermark_is_on_time():
    assert clock_at(T).observe(T - LATENESS) is False


def test_event_one_ms_older_than_the_watermark_is_late():
    assert clock_at(T).observe(T - LATENESS - 1) is True


def test_out_of_order_within_lateness_is_on_time_and_keeps_stream_time():
    clock = clock_at(T)
    assert clock.observe(T - MIN) is False
    assert clock.stream_time == T


def test_late_by_three_minutes_is_late_and_does_not_move_stream_time():
    clock = clock_at(T)
    assert clock.observe(T - 3 * MIN) is True
    assert clock.stream_time == T


def test_stream_time_is_the_largest_event_time_read():
    clock = SourceClock(LATENESS)
    for t in (T, T + 5_000, T + 1_000, T + 9_000, T + 2_000):
        clock.observe(t)
    assert clock.stream_time == T + 9_000


def test_advance_idle_moves_forward_never_back():
    clock = clock_at(T)
    clock.advance_idle(T - MIN)
    assert clock.stream_time == T
    clock.advance_idle(T + MIN)
    assert clock.stream_time == T + MIN


# -- MergedWatermark -----------------------------------------------------------


def test_merged_stays_at_no_time_until_every_source_has_reported():
    merged = MergedWatermark(sources=2)
    assert merged.update(0, T, False, 2, 0.0) == NO_TIME
    assert merged.update(1, T + MIN, False, 2, 0.0) == T


def test_merged_is_the_minimum_over_sources():
    merged = MergedWatermark(sources=3)
    merged.update(0, T + 2 * MIN, False, 3, 0.0)
    merged.update(1, T, False, 3, 0.0)
    assert merged.update(2, T + MIN, False, 3, 0.0) == T
    assert merged.update(1, T + 5 * MIN, False, 3, 0.0) == T + MIN


def test_merged_never_goes_back_when_a_source_reports_an_older_watermark():
    merged = MergedWatermark(sources=2)
    merged.update(0, T, False, 2, 0.0)
    merged.update(1, T, False, 2, 0.0)
    assert merged.update(0, T - MIN, False, 2, 0.0) == T
    assert merged.marks[0].watermark == T


def test_merged_never_goes_back_when_a_new_source_appears():
    merged = MergedWatermark(sources=1)
    assert merged.update(0, T, False, 1, 0.0) == T
    assert merged.update(0, T + MIN, False, 2, 0.0) == T  # source 1 not heard yet
    assert merged.update(1, T - MIN, False, 2, 0.0) == T  # behind, but no step back


def test_idle_source_does_not_hold_the_minimum_back():
    merged = MergedWatermark(sources=2)
    merged.update(0, T, True, 2, 0.0)
    assert merged.update(1, T + 3 * MIN, False, 2, 0.0) == T + 3 * MIN


def test_idle_source_that_becomes_busy_again_counts_again():
    merged = MergedWatermark(sources=2)
    merged.update(0, T, True, 2, 0.0)
    merged.update(1, T + 3 * MIN, False, 2, 0.0)
    merged.update(0, T + 4 * MIN, False, 2, 0.0)
    assert merged.update(1, T + 6 * MIN, False, 2, 0.0) == T + 4 * MIN


def test_all_sources_idle_advances_with_wall_time_from_the_newest_watermark():
    merged = MergedWatermark(sources=2)
    merged.update(0, T, True, 2, 100.0)
    assert merged.update(1, T + MIN, True, 2, 100.0) == T + MIN
    assert merged.recompute(102.5) == T + MIN + 2_500
    assert merged.recompute(160.0) == T + 2 * MIN


def test_all_idle_wall_advance_stops_when_a_source_is_busy_and_never_goes_back():
    merged = MergedWatermark(sources=1)
    merged.update(0, T, True, 1, 100.0)
    assert merged.recompute(130.0) == T + 30_000
    assert merged.update(0, T + 10_000, False, 1, 140.0) == T + 30_000
    assert merged.recompute(200.0) == T + 30_000
    assert merged.update(0, T + MIN, False, 1, 200.0) == T + MIN


def test_all_idle_wall_advance_stops_when_a_source_goes_silent_and_resumes_when_it_speaks():
    merged = MergedWatermark(sources=2, idle_lease_s=120.0)
    merged.update(0, T, True, 2, 100.0)
    merged.update(1, T + MIN, True, 2, 100.0)
    assert merged.recompute(160.0) == T + 2 * MIN
    merged.update(0, T, True, 2, 160.0)  # source 0 repeats its mark; source 1 is silent
    assert merged.recompute(220.0) == T + MIN + 120_000  # source 1's claim ends at 220 s
    assert merged.recompute(900.0) == T + MIN + 120_000  # time stands still, not wall time
    assert merged.update(0, T, True, 2, 900.0) == T + MIN + 120_000  # still source 1's
    assert merged.update(1, T + MIN, True, 2, 900.0) == T + MIN + 800_000  # idle, it says
