"""Window arithmetic: UTC-minute aligned tumbling and hopping windows.

The windows: docs/contract.md, Windows and tables.
"""

from bisect import insort
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.windows import (
    ACTIVE_USERS,
    PAGE_VIEWS,
    WINDOWS,
    hopping_starts,
    layout_tag,
    new_window_starts_for_minute,
    tumbling_start,
)

MIN = 60_000
# 2026-01-29T09:31:00Z, a minute boundary, computed without the code under test.
T = int(datetime(2026, 1, 29, 9, 31, tzinfo=UTC).timestamp()) * 1000


def test_event_exactly_on_a_minute_boundary_belongs_to_the_window_starting_there():
    assert tumbling_start(T) == T


def test_one_ms_before_a_boundary_belongs_to_the_previous_window():
    assert tumbling_start(T - 1) == T - MIN


def test_last_ms_of_a_minute_stays_in_that_minute():
    assert tumbling_start(T + MIN - 1) == T


def test_tumbling_start_honours_a_custom_size():
    assert tumbling_start(T + 7 * MIN + 5, size_ms=5 * MIN) == T + 4 * MIN  # 09:38 -> 09:35


def test_hopping_windows_are_five_starts_one_minute_apart_oldest_first():
    starts = list(hopping_starts(T + 30_000))
    assert starts == [T - 4 * MIN, T - 3 * MIN, T - 2 * MIN, T - MIN, T]


def test_hopping_event_on_a_boundary_opens_the_window_starting_there_and_leaves_the_oldest():
    assert list(hopping_starts(T)) == [T - 4 * MIN, T - 3 * MIN, T - 2 * MIN, T - MIN, T]
    assert list(hopping_starts(T - 1)) == [T + k * MIN for k in range(-5, 0)]


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_hopping_starts_are_exactly_the_minute_windows_of_five_minutes_that_hold_t(t):
    candidates = range(t - t % MIN - 10 * MIN, t + 10 * MIN, MIN)
    expected = [s for s in candidates if s <= t < s + 5 * MIN]
    assert list(hopping_starts(t)) == expected


def test_first_activity_counts_the_user_in_all_five_windows():
    assert new_window_starts_for_minute(T, []) == list(hopping_starts(T))


def test_activity_in_the_previous_minute_leaves_only_the_newest_window_new():
    assert new_window_starts_for_minute(T, [T - MIN]) == [T]


def test_activity_four_minutes_earlier_shares_only_one_window():
    assert new_window_starts_for_minute(T, [T - 4 * MIN]) == [T - 3 * MIN, T - 2 * MIN, T - MIN, T]


def test_activity_five_minutes_earlier_shares_no_window():
    assert new_window_starts_for_minute(T, [T - 5 * MIN]) == list(hopping_starts(T))


def test_out_of_order_minute_before_a_later_one_only_adds_the_older_windows():
    # Already active at T + 2 min: windows T-2..T+2 hold it; T-4 and T-3 are new.
    assert new_window_starts_for_minute(T, [T + 2 * MIN]) == [T - 4 * MIN, T - 3 * MIN]


@given(st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=15, unique=True))
def test_summing_first_time_increments_gives_the_distinct_user_count_per_window(minutes):
    """One user active in `minutes` (any order) is counted exactly once in every window;
    each call is checked against the definition (no earlier minute in the window)."""
    counts: dict[int, int] = {}
    seen: list[int] = []
    for m in minutes:
        minute = T + m * MIN
        new = new_window_starts_for_minute(minute, seen)
        assert new == [
            s for s in hopping_starts(minute) if not any(s <= m < s + 5 * MIN for m in seen)
        ]
        for start in new:
            counts[start] = counts.get(start, 0) + 1
        insort(seen, minute)
    expected = {T + s * MIN: 1 for s in range(-4, 21) if any(s <= m < s + 5 for m in minutes)}
    assert counts == expected


@given(
    st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=15, unique=True),
    st.sampled_from([(10, 10), (10, 5), (6, 2), (3, 1), (1, 1)]),
)
def test_first_time_windows_of_any_minute_hop_are_those_holding_no_earlier_minute(minutes, shape):
    size, hop = shape[0] * MIN, shape[1] * MIN
    seen: list[int] = []
    for m in minutes:
        minute = T + m * MIN
        epoch_aligned = range(T - T % hop - 60 * MIN, T + 60 * MIN, hop)
        holding = [s for s in epoch_aligned if s <= minute < s + size]
        expected = [s for s in holding if not any(s <= x < s + size for x in seen)]
        assert new_window_starts_for_minute(minute, seen, size, hop) == expected
        insort(seen, minute)


# -- the windows' declarations ---------------------------------------------------


def test_the_layout_of_the_two_windows_names_the_same_state_as_before_windows_were_data():
    assert WINDOWS[:2] == (PAGE_VIEWS, ACTIVE_USERS)
    assert layout_tag(WINDOWS[:2]) == "pv60s-au300s-hop60s"
    assert layout_tag((PAGE_VIEWS,)) == "pv60s"


def test_a_windows_state_keys_are_its_prefix_start_and_page():
    assert PAGE_VIEWS.state_key((T, "/a|b")) == f"pv|{T}|/a|b"
    assert PAGE_VIEWS.parse_key(f"{T}|/a|b") == (T, "/a|b")
    assert ACTIVE_USERS.state_key(T) == f"au|{T}"
    assert ACTIVE_USERS.parse_key(str(T)) == T


@pytest.mark.parametrize(
    "change, why",
    [
        ({"size_ms": 7 * MIN, "hop_ms": 2 * MIN}, "size is not a multiple"),
        ({"hop_ms": 30_000, "size_ms": 60_000}, "by the minute"),
        ({"prefix": "u"}, "cannot prefix"),
        ({"prefix": "a|b"}, "cannot prefix"),
    ],
)
def test_a_window_that_cannot_be_kept_is_refused_where_it_is_declared(change, why):
    with pytest.raises(ValueError, match=why):
        replace(ACTIVE_USERS, **change)
