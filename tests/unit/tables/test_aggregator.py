"""PartitionAggregator driven like the merge agent: add() events, mark() watermarks.

Expectations are written by hand or computed by the small brute-force helpers at
the bottom of this file, never by the code under test.
"""

import random
from collections import Counter, defaultdict
from typing import NamedTuple

import pytest

from tables.aggregator import RETAIN_CLOSED_MS, Changes, PartitionAggregator
from tables.sessions import ACTIVE, ENDED, TIMED_OUT, SessionRow

PV, AU = "page_views", "active_users"
MIN = 60_000
TIMEOUT = 15 * MIN
T = 1_769_679_060_000  # 2026-01-29T09:31:00Z, a minute boundary


class Driver:
    """Feeds one aggregator the way app/stateful/processor.py does, numbering offsets per source."""

    def __init__(self, sources: int = 1) -> None:
        self.sources = sources
        self.agg = PartitionAggregator(TIMEOUT, sources=sources)
        self.next_offset: Counter[int] = Counter()

    def add(self, t: int, user: str, kind: str = "page_view", url: str = "/a", source: int = 0):
        offset = self.next_offset[source]
        self.next_offset[source] += 1
        page = url if kind in ("page_view", "click") else None
        return self.agg.add(source, offset, t, user, kind, page)

    def mark(self, watermark: int, source: int = 0, idle: bool = False, wall: float = 0.0):
        self.agg.mark(source, watermark, idle, self.sources, wall)

    def sessions(self) -> dict:
        return self.agg.take_changes().sessions


# -- windows -------------------------------------------------------------------


def test_page_views_are_counted_per_page_per_minute_and_only_page_views():
    d = Driver()
    d.add(T, "u1", url="/a")
    d.add(T + MIN - 1, "u2", url="/a")
    d.add(T + MIN, "u1", url="/a")  # on the boundary: the next window
    d.add(T + 1_000, "u1", url="/b")
    d.add(T + 2_000, "u1", "click", url="/a")
    d.add(T + 3_000, "u3", "session_start")
    expected = {(T, "/a"): 2, (T + MIN, "/a"): 1, (T, "/b"): 1}
    assert d.agg.windows[PV].counts == expected
    assert d.agg.take_changes().windows[PV].rows == expected


def test_active_users_count_each_user_once_per_five_minute_window():
    d = Driver()
    for t in (T, T + 30_000, T + MIN, T + 2 * MIN + 59_999):  # u1 in minutes 0, 1, 2
        d.add(t, "u1")
    d.add(T + 2 * MIN, "u2", "click")  # minute 2
    d.add(T + 6 * MIN, "u3", "session_start")  # minute 6
    by_minute = {-4: 1, -3: 1, -2: 2, -1: 2, 0: 2, 1: 2, 2: 3, 3: 1, 4: 1, 5: 1, 6: 1}
    expected = {T + k * MIN: n for k, n in by_minute.items()}
    assert d.agg.windows[AU].counts == expected
    assert d.agg.take_changes().windows[AU].rows == expected


@pytest.mark.parametrize("seed", range(20))
def test_window_counts_match_brute_force_for_any_arrival_order(seed):
    rng = random.Random(seed)
    events = random_events(rng, users=6, count=80, span=12 * MIN)
    rng.shuffle(events)
    d = Driver()
    for e in events:
        assert d.add(e.t, e.user, e.kind, e.url)
    assert d.agg.windows[PV].counts == brute_page_views(events)
    assert d.agg.windows[AU].counts == brute_active_users(events)


def test_a_window_passed_by_the_watermark_is_sent_again_with_its_final_value():
    d = Driver()
    d.add(T, "u1", url="/a")
    d.agg.take_changes()
    d.mark(T + MIN)
    changes = d.agg.take_changes()
    assert changes.windows[PV].rows == {(T, "/a"): 1}
    assert changes.windows[AU].rows == {T - 4 * MIN: 1}  # the only window ending by T + 1 min


def test_closed_windows_are_dropped_after_the_retention_time():
    assert RETAIN_CLOSED_MS == 10 * MIN
    d = Driver()
    d.add(T, "u1", url="/a")
    d.mark(T + MIN + RETAIN_CLOSED_MS - 1)
    assert (T, "/a") in d.agg.windows[PV].counts
    assert T - 4 * MIN in d.agg.windows[AU].counts
    d.agg.take_changes()

    d.mark(T + MIN + RETAIN_CLOSED_MS)
    changes = d.agg.take_changes()
    assert d.agg.windows[PV].counts == {}
    assert changes.windows[PV].dropped == {(T, "/a")}
    assert changes.windows[AU].dropped == {T - 4 * MIN}
    assert sorted(d.agg.windows[AU].counts) == [T - 3 * MIN, T - 2 * MIN, T - MIN, T]

    d.mark(T + 5 * MIN + RETAIN_CLOSED_MS)
    assert d.agg.take_changes().windows[AU].dropped == {T - 3 * MIN, T - 2 * MIN, T - MIN, T}
    assert d.agg.windows[AU].counts == {}


def test_changes_name_the_rows_that_became_final():
    d = Driver()
    d.add(T, "u1", kind="session_start")
    d.add(T + 1_000, "u1", url="/a")
    d.add(T + 2_000, "u1", kind="session_end")
    assert not d.agg.take_changes().windows[PV].final  # open window

    d.mark(T + MIN + RETAIN_CLOSED_MS)  # closed and past retention at once
    changes = d.agg.take_changes()
    assert changes.windows[PV].final == {(T, "/a")}
    assert changes.windows[PV].rows[(T, "/a")] == 1  # its final value, though already dropped
    assert changes.windows[PV].dropped == {(T, "/a")}
    assert changes.windows[AU].final == {T + k * MIN for k in range(-4, 1)}  # all its windows
    assert changes.sessions[("u1", T)] == SessionRow("u1", T, T + 2_000, ENDED)
    assert "u1" not in d.agg.users  # nothing of it is open any more


# -- replay and lateness -------------------------------------------------------


def test_replayed_offsets_are_ignored():
    agg = PartitionAggregator(TIMEOUT, sources=2)
    assert agg.add(0, 5, T, "u1", "page_view", "/a")
    assert not agg.add(0, 5, T, "u1", "page_view", "/a")  # same record again
    assert not agg.add(0, 3, T, "u1", "page_view", "/a")  # an older offset
    assert agg.add(1, 5, T, "u2", "page_view", "/a")  # same offset, other source
    assert agg.add(0, 6, T, "u1", "page_view", "/a")
    assert agg.windows[PV].counts == {(T, "/a"): 3}
    assert agg.windows[AU].counts[T] == 2


def test_event_behind_the_merged_watermark_is_counted_late_and_excluded():
    d = Driver()
    d.mark(T + MIN)
    assert not d.add(T + MIN - 1, "u1", "session_start")
    assert d.agg.late_at_merge == 1
    assert d.agg.windows[PV].counts == {} and d.agg.windows[AU].counts == {} and d.agg.users == {}
    assert d.add(T + MIN, "u1")  # exactly at the watermark: on time
    assert d.agg.windows[PV].counts == {(T + MIN, "/a"): 1}


def test_merged_watermark_is_the_minimum_over_two_sources():
    d = Driver(sources=2)
    d.mark(T + 10 * MIN, source=0)
    assert d.add(T, "u1", source=1)  # source 1 has not reported: nothing is late yet
    d.mark(T + 2 * MIN, source=1)
    assert d.agg.watermark == T + 2 * MIN
    assert not d.add(T + MIN, "u2", source=0)
    assert d.agg.late_at_merge == 1


# -- sessions ------------------------------------------------------------------


def test_sessions_wait_until_the_merged_watermark_passes_them():
    d = Driver()
    d.add(T, "u1", "session_start")
    assert d.sessions() == {}
    d.mark(T)  # an event at T could still arrive on time
    assert d.sessions() == {}
    d.mark(T + 1)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, None, ACTIVE)}


def test_sessions_are_applied_in_event_time_order_when_added_out_of_order():
    d = Driver()
    d.add(T + 5 * MIN, "u1", "session_end")
    d.add(T + MIN, "u1", "page_view")
    d.add(T, "u1", "session_start")
    d.mark(T + 6 * MIN)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, T + 5 * MIN, ENDED)}


@pytest.mark.parametrize("source_1_first", [False, True])
def test_sessions_interleaved_from_two_sources_follow_event_time(source_1_first):
    # In arrival order, start at T then page_view at T+20m would time out; the click at
    # T+10m from the other source keeps the session alive.
    d = Driver(sources=2)
    arrivals = [(T, "session_start", 0), (T + 20 * MIN, "page_view", 0), (T + 10 * MIN, "click", 1)]
    if source_1_first:
        arrivals.reverse()
    for t, kind, source in arrivals:
        d.add(t, "u1", kind, source=source)

    d.mark(T + 30 * MIN, source=0)
    assert d.agg.watermark < T and d.sessions() == {}  # source 1 has not reported
    d.mark(T + 11 * MIN, source=1)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, None, ACTIVE)}
    d.mark(T + 30 * MIN, source=1)
    assert d.sessions() == {}  # extended to T+20m, nothing to write
    d.mark(T + 35 * MIN - 1, source=0)
    d.mark(T + 35 * MIN - 1, source=1)
    assert d.sessions() == {}
    d.mark(T + 35 * MIN, source=0)
    d.mark(T + 35 * MIN, source=1)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, T + 20 * MIN, TIMED_OUT)}


def test_session_times_out_when_the_watermark_reaches_last_event_plus_timeout():
    d = Driver()
    d.add(T, "u1", "session_start")
    d.add(T + 2 * MIN, "u1", "click")
    d.mark(T + 2 * MIN + 1)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, None, ACTIVE)}
    d.mark(T + 2 * MIN + TIMEOUT - 1)
    assert d.sessions() == {}
    d.mark(T + 2 * MIN + TIMEOUT)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, T + 2 * MIN, TIMED_OUT)}


def test_gap_of_exactly_the_timeout_inside_one_watermark_step_times_out():
    d = Driver()
    d.add(T, "u1", "session_start")
    d.add(T + TIMEOUT, "u1", "click")
    d.mark(T + TIMEOUT + 1)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, T, TIMED_OUT)}


def test_session_end_without_an_open_session_writes_nothing():
    d = Driver()
    d.add(T, "u1", "session_end")
    d.mark(T + MIN)
    assert d.sessions() == {}


def test_all_sources_idle_times_sessions_out_with_wall_time():
    d = Driver()
    d.add(T, "u1", "session_start")
    d.mark(T + 1, wall=50.0)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, None, ACTIVE)}
    d.mark(T + 1, idle=True, wall=100.0)
    d.mark(T + 1, idle=True, wall=900.0)  # an idle source repeats its mark (IDLE_LEASE_S)
    d.agg.tick(999.0)  # T + 1 + 899 s: one second short
    assert d.sessions() == {}
    d.agg.tick(1000.0)
    assert d.sessions() == {("u1", T): SessionRow("u1", T, T, TIMED_OUT)}


@pytest.mark.parametrize("seed", range(40))
def test_rows_match_brute_force_whatever_the_interleaving_of_two_sources(seed):
    """Random events, split over two sources read in arbitrary order, with each source's
    watermark marked as it goes: the upserted rows equal a brute-force evaluation."""
    rng = random.Random(seed)
    events = random_events(rng, users=4, count=60, span=60 * MIN)
    queues = {0: [], 1: []}
    for e in events:
        queues[rng.randrange(2)].append(e)
    for queue in queues.values():
        rng.shuffle(queue)

    d = Driver(sources=2)
    table = Changes()
    while queues[0] or queues[1]:
        source = rng.choice([s for s in queues if queues[s]])
        e = queues[source].pop()
        assert d.add(e.t, e.user, e.kind, e.url, source=source)
        if rng.random() < 0.3:  # the source's watermark: no older event is still to come
            d.mark(min((x.t for x in queues[source]), default=e.t), source=source)
        upsert(table, d.agg.take_changes())
    d.mark(T + 10 * 60 * MIN, source=0)
    d.mark(T + 10 * 60 * MIN, source=1)
    upsert(table, d.agg.take_changes())

    assert d.agg.late_at_merge == 0
    assert table.windows[PV].rows == brute_page_views(events)
    assert table.windows[AU].rows == brute_active_users(events)
    assert table.sessions == brute_sessions(events)


# -- take_changes, open_rows, pruning -------------------------------------------


def test_take_changes_returns_what_changed_and_then_starts_empty():
    d = Driver()
    d.add(T, "u1", url="/a")
    changes = d.agg.take_changes()
    assert changes.windows[PV].rows == {(T, "/a"): 1}
    assert changes.windows[AU].rows == {T + k * MIN: 1 for k in range(-4, 1)}
    assert changes.users == {"u1"}
    assert changes.clock is True
    assert changes.sessions == {}
    assert not (changes.windows[PV].dropped or changes.windows[AU].dropped or changes.dropped_users)
    assert d.agg.take_changes() == Changes()


def test_replayed_offset_changes_nothing():
    d = Driver()
    d.agg.add(0, 0, T, "u1", "page_view", "/a")
    d.agg.take_changes()
    d.agg.add(0, 0, T, "u1", "page_view", "/a")
    assert d.agg.take_changes() == Changes()


def test_open_rows_holds_every_window_and_only_open_sessions():
    d = Driver()
    d.add(T, "u1", "session_start")
    d.add(T, "u2", "session_start")
    d.add(T + MIN, "u2", "session_end")
    d.add(T, "u3", url="/x")
    d.add(T + 3 * MIN, "u4", "session_start")  # not yet passed by the watermark
    d.mark(T + 2 * MIN)
    rows = d.agg.open_rows()
    assert rows.windows[PV].rows == {(T, "/x"): 1}
    assert rows.windows[AU].rows == {
        T - 4 * MIN: 3, T - 3 * MIN: 3, T - 2 * MIN: 3, T - MIN: 4, T: 4,
        T + MIN: 2, T + 2 * MIN: 1, T + 3 * MIN: 1,
    }  # fmt: skip
    assert rows.sessions == {("u1", T): SessionRow("u1", T, None, ACTIVE)}


def test_users_with_nothing_left_are_dropped_once_the_watermark_moves_on():
    d = Driver()
    d.add(T, "u1")
    d.add(T, "u2", "session_start")
    d.agg.take_changes()
    d.mark(T + 20 * MIN)
    changes = d.agg.take_changes()
    assert set(d.agg.users) == set()
    assert changes.dropped_users == {"u1", "u2"}
    assert changes.sessions == {("u2", T): SessionRow("u2", T, T, TIMED_OUT)}


def test_a_user_dropped_and_back_in_the_same_batch_is_kept_not_deleted():
    d = Driver()
    d.add(T, "u1")
    d.agg.take_changes()
    d.mark(T + 20 * MIN)  # u1 has nothing left: dropped
    d.add(T + 21 * MIN, "u1", "session_start")  # and back before the batch is taken
    changes = d.agg.take_changes()
    assert "u1" in d.agg.users
    assert changes.users == {"u1"}
    assert "u1" not in changes.dropped_users
    # what is persisted for it: the new state, not a deletion
    assert d.agg.snapshot(changes)["u|u1"] is not None


# -- brute force ---------------------------------------------------------------


class Ev(NamedTuple):
    t: int
    user: str
    kind: str
    url: str


def random_events(rng: random.Random, users: int, count: int, span: int) -> list[Ev]:
    """Times on a 30 s grid (boundaries and exact 15 min gaps happen), unique per user."""
    kinds = ["page_view"] * 4 + ["click"] * 2 + ["session_start"] * 2 + ["session_end"]
    used: set[tuple[str, int]] = set()
    events = []
    while len(events) < count:
        user, t = f"u{rng.randrange(users)}", T + rng.randrange(0, span, 30_000)
        if (user, t) not in used:
            used.add((user, t))
            events.append(Ev(t, user, rng.choice(kinds), rng.choice(["/a", "/b", "/c"])))
    return events


def brute_page_views(events: list[Ev]) -> dict:
    return dict(Counter((e.t - e.t % MIN, e.url) for e in events if e.kind == "page_view"))


def brute_active_users(events: list[Ev]) -> dict:
    users = defaultdict(set)
    for e in events:
        minute = e.t - e.t % MIN
        for start in range(minute - 4 * MIN, minute + 1, MIN):
            users[start].add(e.user)
    return {start: len(u) for start, u in users.items()}


def brute_sessions(events: list[Ev]) -> dict:
    """The session rules of docs/contract.md, Sessions, applied per user in event-time order."""
    rows = {}
    for user in {e.user for e in events}:
        start = last = None
        for e in sorted(e for e in events if e.user == user):
            if start is not None and e.t - last >= TIMEOUT:
                rows[(user, start)] = SessionRow(user, start, last, TIMED_OUT)
                start = None
            if e.kind == "session_start":
                if start is not None:
                    rows[(user, start)] = SessionRow(user, start, last, TIMED_OUT)
                start = last = e.t
            elif e.kind == "session_end":
                if start is not None:
                    rows[(user, start)] = SessionRow(user, start, e.t, ENDED)
                start = None
            elif start is not None:
                last = e.t
        if start is not None:
            rows[(user, start)] = SessionRow(user, start, last, TIMED_OUT)
    return rows


def upsert(table: Changes, changes: Changes) -> None:
    """What PostgreSQL ends up holding: the last absolute value written per key."""
    table.windows[PV].rows.update(changes.windows[PV].rows)
    table.windows[AU].rows.update(changes.windows[AU].rows)
    table.sessions.update(changes.sessions)


def test_the_session_heaps_grow_with_users_and_pending_events_not_with_all_events():
    """Many events and watermark steps for few users. The expiry heap once gained an
    entry per user per watermark step, kept for the session timeout; now it holds one
    per user, and the pending heap one per event still waiting for the watermark."""
    d = Driver()
    users = [f"u{i}" for i in range(20)]
    rng = random.Random(3)
    for u in users:
        d.add(T, u, "session_start")
    t = T
    for step in range(300):
        t += 10_000
        for _ in range(10):
            d.add(t - rng.randrange(0, 60_000), rng.choice(users), "page_view")
        d.mark(t - 60_000)
        if step % 10 == 0:
            d.agg.take_changes()
        waiting = sum(len(user.pending) for user in d.agg.users.values())
        assert len(d.agg.session_queue._pending_heap) <= waiting
        assert len(d.agg.session_queue._expiry_heap) <= len(users)
    d.mark(t + 20 * MIN)  # everything times out and is released
    sessions = d.agg.take_changes().sessions
    assert {row.status for row in sessions.values()} == {TIMED_OUT}
    assert not d.agg.session_queue._expiry_due and not d.agg.session_queue._pending_due


# -- the state's keys ------------------------------------------------------------


def test_a_waiting_session_event_is_a_key_written_once_and_deleted_once():
    d = Driver()
    d.add(T, "u|1", "session_start")  # the separator in a user id
    first = d.agg.snapshot(d.agg.take_changes())
    assert first["u|u|1"] == [[T], None]
    assert first["e|u|1|0|0"] == [T, "session_start"]
    d.add(T + 1_000, "u|1", "click")  # the same minute: the user's key is not rewritten
    assert d.agg.snapshot(d.agg.take_changes()) == {"e|u|1|0|1": [T + 1_000, "click"]}
    d.mark(T + 2 * MIN)  # both leave the wait for the session
    released = d.agg.snapshot(d.agg.take_changes())
    assert released["e|u|1|0|0"] is None and released["e|u|1|0|1"] is None
    assert released["u|u|1"] == [[T], [T, T + 1_000]]


def test_an_event_added_and_released_in_one_batch_writes_no_key_of_its_own():
    d = Driver()
    d.add(T, "u1", "session_start")
    d.add(T + 1_000, "u1")
    d.mark(T + MIN)
    d.add(T + MIN + 1_000, "u1")  # still waiting
    snap = d.agg.snapshot(d.agg.take_changes())
    assert {k: v for k, v in snap.items() if k.startswith("e|")} == {
        "e|u1|0|2": [T + MIN + 1_000, "page_view"]
    }
    assert snap["u|u1"] == [[T, T + MIN], [T, T + 1_000]]


def test_a_restore_rebuilds_each_user_with_its_waiting_events():
    d = Driver(sources=2)
    for i, user in enumerate(("u1", "u2", "u1")):
        d.add(T + i * 1_000, user, source=i % 2)
    d.mark(T, source=0)
    d.mark(T, source=1)
    d.add(T + 30_000, "u1", source=1)
    restored = PartitionAggregator(TIMEOUT, sources=2)
    state = {k: v for k, v in d.agg.snapshot(d.agg.take_changes()).items() if v is not None}
    restored.restore(d.agg.checkpoint(10), state, 0.0)
    assert restored.users == d.agg.users
    assert sum(len(user.pending) for user in restored.users.values()) == 4
    # and they are released as the original's are
    for agg in (d.agg, restored):
        agg.mark(0, T + 5 * MIN, False, 2, 0.0)
        agg.mark(1, T + 5 * MIN, False, 2, 0.0)
    assert restored.take_changes().sessions == d.agg.take_changes().sessions
    assert restored.users == d.agg.users
