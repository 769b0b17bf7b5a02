"""A seeded activity scenario and its expected rows, computed independently of the pipeline.

The expectation follows docs/contract.md (Event time, Windows and tables, Sessions)
directly (lateness per source partition in
send order, 1-minute counts, 5-minute distinct users every minute, session rules) and
shares no code with app/ or tables/.
"""

from __future__ import annotations

import random
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

MIN = 60_000
LATENESS = 2 * MIN
TIMEOUT = 15 * MIN
PAGES = ["/home", "/a", "/b", "/c", "/d", "/checkout"]


@dataclass
class Sent:
    t: int
    user: str
    type: str
    page: str | None
    partition: int

    def value(self) -> dict:
        iso = datetime.fromtimestamp(self.t / 1000, UTC).isoformat(timespec="milliseconds")
        body = {
            "event_time": iso.replace("+00:00", "Z"),
            "user_id": self.user,
            "event_type": self.type,
        }
        if self.page:
            body["page_url"] = self.page
        return body


def _user_events(rng: random.Random, user: str, start: int, span: int) -> list[tuple]:
    out = []
    t = start + rng.randrange(0, span // 2)
    while t < start + span:
        if rng.random() < 0.08:  # a stray event outside any session
            out.append((t, user, rng.choice(["session_end", "page_view"]), None))
            t += rng.randint(10_000, 5 * MIN)
        out.append((t, user, "session_start", None))
        for _ in range(rng.randint(1, 10)):
            t += 16 * MIN if rng.random() < 0.04 else rng.randint(2_000, 4 * MIN)
            out.append((t, user, rng.choice(["page_view", "page_view", "click"]), None))
        ending = rng.random()
        if ending < 0.6:
            t += rng.randint(1_000, 2 * MIN)
            out.append((t, user, "session_end", None))
        elif ending < 0.75:
            t += rng.randint(1_000, MIN)
            continue  # the next loop opens a session while this one is open
        t += rng.randint(MIN, 20 * MIN)
    return [
        (t, u, ty, rng.choice(PAGES) if ty in ("page_view", "click") else None)
        for t, u, ty, _ in out
    ]


def build(
    seed: int, users: int, partitions: int, start_ms: int, span_ms: int, keyed: bool
) -> list[list[Sent]]:
    """Events per source partition, in the order they are sent."""
    rng = random.Random(seed)
    raw = []
    for i in range(users):
        raw += _user_events(rng, f"user-{i:04d}", start_ms, span_ms)
    seen: set[int] = set()
    events = []
    for t, user, ty, page in sorted(raw):
        while t in seen:  # unique times: no tie-breaking questions in this scenario
            t += 1
        seen.add(t)
        partition = zlib.crc32(user.encode()) % partitions if keyed else rng.randrange(partitions)
        events.append(Sent(t, user, ty, page, partition))
    per_partition: list[list[Sent]] = [[] for _ in range(partitions)]
    for e in sorted(events, key=lambda e: e.t):
        per_partition[e.partition].append(e)
    for p, seq in enumerate(per_partition):
        for i in range(len(seq) - 1):  # out of order within the lateness
            if rng.random() < 0.15 and seq[i + 1].t - seq[i].t < 90_000:
                seq[i], seq[i + 1] = seq[i + 1], seq[i]
        for _ in range(len(seq) // 30):  # late by 3+ minutes: sent well after its time
            i = rng.randrange(len(seq) - 1)
            e = seq.pop(i)
            j = next((k for k in range(i, len(seq)) if seq[k].t > e.t + 3 * MIN + 5_000), None)
            seq.insert(len(seq) if j is None else j + 1, e)
        # a closing event per partition pushes every watermark far past the scenario
        closer_t = start_ms + span_ms + 12 * MIN + p
        seq.append(Sent(closer_t, f"closer-{p}", "page_view", "/closer", p))
    return per_partition


def in_the_past(
    seed: int, users: int, partitions: int, keyed: bool, hours_ago: int = 4, offset_ms: int = 7
) -> tuple[list[list[Sent]], Expected, int]:
    """A 40-minute scenario starting `hours_ago` back: (events per partition, expected
    rows, number of events)."""
    start_ms = (int(time.time() * 1000) - hours_ago * 3_600_000) // 1000 * 1000 + offset_ms
    per_partition = build(
        seed=seed,
        users=users,
        partitions=partitions,
        start_ms=start_ms,
        span_ms=40 * MIN,
        keyed=keyed,
    )
    return per_partition, expect(per_partition), sum(len(s) for s in per_partition)


@dataclass
class Expected:
    page_views: dict[tuple[int, str], int]
    active_users: dict[int, int]
    sessions: dict[tuple[str, int], tuple[int | None, str]]
    late: int


def expect(per_partition: list[list[Sent]]) -> Expected:
    on_time: list[Sent] = []
    late = 0
    final_watermarks = []
    for seq in per_partition:
        stream_time = None
        for e in seq:
            if stream_time is not None and e.t < stream_time - LATENESS:
                late += 1
            else:
                on_time.append(e)
            stream_time = e.t if stream_time is None else max(stream_time, e.t)
        final_watermarks.append(stream_time - LATENESS)
    watermark = min(final_watermarks)

    page_views: dict[tuple[int, str], int] = defaultdict(int)
    window_users: dict[int, set] = defaultdict(set)
    for e in on_time:
        minute = e.t // MIN * MIN
        if e.type == "page_view":
            page_views[(minute, e.page)] += 1
        for k in range(5):
            window_users[minute - k * MIN].add(e.user)

    sessions: dict[tuple[str, int], tuple[int | None, str]] = {}
    by_user: dict[str, list[Sent]] = defaultdict(list)
    for e in on_time:
        by_user[e.user].append(e)
    for user, evs in by_user.items():
        open_start = last = None
        for e in sorted(evs, key=lambda e: e.t):
            if e.t >= watermark:
                break  # not yet released by the merged watermark
            if open_start is not None and e.t - last >= TIMEOUT:
                sessions[(user, open_start)] = (last, "timed_out")
                open_start = None
            if e.type == "session_start":
                if open_start is not None:
                    sessions[(user, open_start)] = (last, "timed_out")
                open_start = last = e.t
                sessions[(user, e.t)] = (None, "active")
            elif e.type == "session_end":
                if open_start is not None:
                    sessions[(user, open_start)] = (e.t, "ended")
                    open_start = None
            elif open_start is not None:
                last = max(last, e.t)
        if open_start is not None and watermark >= last + TIMEOUT:
            sessions[(user, open_start)] = (last, "timed_out")
    return Expected(dict(page_views), {s: len(u) for s, u in window_users.items()}, sessions, late)
