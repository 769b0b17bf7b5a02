"""Windows other than the two the pipeline keeps, declared as data: counted, finalised,
persisted and restored like those (the two: tests/unit/tables/test_aggregator.py).
Expectations are computed by brute force from the events."""

import random
from collections import Counter, defaultdict
from dataclasses import replace

import pytest

from app.stateful.outbox import Outbox
from tables.aggregator import RETAIN_CLOSED_MS, PartitionAggregator
from tables.windows import ACTIVE_USERS, DISTINCT_USERS, PAGE_VIEWS, WINDOWS

MIN = 60_000
T = 1_769_679_060_000  # 2026-01-29T09:31:00Z, a minute boundary
VIEWS_10M = replace(
    PAGE_VIEWS, name="test_views_10m", prefix="tpv10m", size_ms=10 * MIN, hop_ms=10 * MIN
)
CLICKS_3M = replace(
    PAGE_VIEWS, name="test_clicks_3m", prefix="tcl3m", counts="click", size_ms=3 * MIN
)
USERS_10M = replace(
    ACTIVE_USERS, name="test_users_10m", prefix="tau10m", size_ms=10 * MIN, hop_ms=10 * MIN
)
EXTRA = (VIEWS_10M, CLICKS_3M, USERS_10M)
SHAPES = {spec.name: (spec.size_ms, spec.hop_ms, spec.counts) for spec in (*WINDOWS, *EXTRA)}


def events(seed: int, count: int = 120) -> list[tuple[int, str, str, str]]:
    rng = random.Random(seed)
    kinds = ["page_view", "page_view", "click", "session_start"]
    return [
        (T + rng.randrange(0, 40 * MIN, 15_000), f"u{rng.randrange(8)}", rng.choice(kinds),
         rng.choice(["/a", "/b"]))
        for _ in range(count)
    ]  # fmt: skip


def holding(t: int, size: int, hop: int) -> list[int]:
    """The starts of the windows that hold t, from their definition."""
    return [s for s in range(t - t % hop - size, t + 1, hop) if s <= t < s + size]


def brute(name: str, evs) -> dict:
    size, hop, counts = SHAPES[name]
    if counts == DISTINCT_USERS:
        users = defaultdict(set)
        for t, user, _, _ in evs:
            for s in holding(t, size, hop):
                users[s].add(user)
        return {s: len(u) for s, u in users.items()}
    return dict(
        Counter(
            (s, url) for t, _, kind, url in evs if kind == counts for s in holding(t, size, hop)
        )
    )


def fed(evs, windows=(*WINDOWS, *EXTRA)) -> PartitionAggregator:
    agg = PartitionAggregator(15 * MIN, windows=windows)
    for offset, (t, user, kind, url) in enumerate(evs):
        assert agg.add(0, offset, t, user, kind, url if kind != "session_start" else None)
    return agg


@pytest.mark.parametrize("seed", range(5))
def test_every_declared_window_counts_as_its_definition_says(seed):
    evs = events(seed)
    random.Random(seed).shuffle(evs)
    agg = fed(evs)
    for name in SHAPES:
        assert agg.windows[name].counts == brute(name, evs), name


def test_windows_become_final_at_their_own_end_and_leave_after_the_retention():
    agg = fed([(T + 30_000, "u1", "page_view", "/a"), (T + 30_000, "u1", "click", "/a")])
    agg.take_changes()
    agg.mark(0, T + MIN, False, 1, 0.0)
    final = {name: rows.final for name, rows in agg.take_changes().windows.items()}
    assert final["page_views"] == {(T, "/a")} and not final["test_views_10m"]
    assert final["test_clicks_3m"] == {(T - 2 * MIN, "/a")}  # the one hopping window ending by then
    start_10m = T - T % (10 * MIN)
    agg.mark(0, start_10m + 10 * MIN, False, 1, 0.0)
    final = {name: rows.final for name, rows in agg.take_changes().windows.items()}
    assert final["test_views_10m"] == {(start_10m, "/a")}
    assert final["test_users_10m"] == {start_10m}
    agg.mark(0, start_10m + 10 * MIN + RETAIN_CLOSED_MS, False, 1, 0.0)
    changes = agg.take_changes()
    assert changes.windows["test_views_10m"].dropped == {(start_10m, "/a")}
    assert all(not window.counts for window in agg.windows.values())


def test_a_restore_from_the_persisted_keys_holds_every_window_again():
    evs = events(7)
    agg = fed(evs)
    state = {k: v for k, v in agg.snapshot(agg.take_changes()).items() if v is not None}
    prefixes = {spec.prefix for spec in (*WINDOWS, *EXTRA)}
    assert {k.split("|")[0] for k in state} == prefixes | {"u", "e"}
    restored = PartitionAggregator(15 * MIN, windows=(*WINDOWS, *EXTRA))
    restored.restore(agg.checkpoint(len(evs)), state, 0.0)
    assert restored.open_rows() == agg.open_rows()
    for agg_ in (agg, restored):
        agg_.mark(0, T + 60 * MIN, False, 1, 0.0)
    assert restored.take_changes() == agg.take_changes()


def test_the_outbox_holds_and_sends_again_the_final_rows_of_every_window():
    agg = fed(events(3))
    agg.mark(0, T + 60 * MIN, False, 1, 0.0)
    changes = agg.take_changes()
    box = Outbox((*WINDOWS, *EXTRA))
    box.hold(changes, batch=1)
    restored = Outbox((*WINDOWS, *EXTRA))
    restored.restore(box.snapshot())
    rows = restored.resend(batch=2)
    for name, window in changes.windows.items():
        assert window.final and rows.windows[name].rows == window.rows, name


def test_two_windows_under_one_prefix_are_refused():
    with pytest.raises(ValueError, match="prefix"):
        PartitionAggregator(MIN, windows=(PAGE_VIEWS, replace(VIEWS_10M, prefix="pv")))
