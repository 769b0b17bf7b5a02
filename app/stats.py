"""Counters the worker keeps for logs, the stats endpoint and metrics."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from tables.watermark import SourceClock


@dataclass
class PartitionStats:
    events: int = 0
    late: int = 0
    dead_letters: int = 0
    stream_time: int | None = None
    watermark: int | None = None


@dataclass
class Stats:
    partitions: dict[int, PartitionStats] = field(default_factory=dict)
    dead_letter_reasons: Counter = field(default_factory=Counter)
    # (sink, reason) -> rows or records a sink set aside as never writable
    rejected: Counter = field(default_factory=Counter)
    lake_maintenance: dict | None = None
    # input record's Kafka timestamp -> the commit that made its outputs visible
    latency: LatencyHistogram = field(default_factory=lambda: LatencyHistogram())
    # how late the event loop woke a sleeper (`watch_loop_lag`)
    loop_lag: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(LOOP_LAG_BUCKETS_S))

    def _part(self, partition: int) -> PartitionStats:
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = PartitionStats()
        return part

    def on_batch(self, partition: int, events: int, late: int, clock: SourceClock) -> None:
        part = self._part(partition)
        part.events += events
        part.late += late
        part.stream_time = clock.stream_time
        part.watermark = clock.watermark

    def on_dead_letter(self, partition: int, reason: str) -> None:
        self._part(partition).dead_letters += 1
        self.dead_letter_reasons[reason] += 1

    def on_rejected(self, sink: str, reason: str, count: int = 1) -> None:
        self.rejected[(sink, reason)] += count

    @property
    def totals(self) -> dict[str, int]:
        return {
            "events": sum(p.events for p in self.partitions.values()),
            "late": sum(p.late for p in self.partitions.values()),
            "dead_letters": sum(p.dead_letters for p in self.partitions.values()),
        }


LOOP_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LOOP_LAG_TICK_S = 0.02
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LatencyHistogram:
    """Counts per bucket (upper bounds in seconds, cumulative when rendered)."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.bounds_ms = [b * 1000 for b in buckets]
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum_s = 0.0
        self.count = 0

    def observe_ms(self, values_ms) -> None:
        bounds, counts = self.bounds_ms, self.counts
        total = 0
        n = 0
        for value in values_ms:
            counts[bisect_left(bounds, value)] += 1
            total += value
            n += 1
        self.sum_s += total / 1000
        self.count += n

    def snapshot(self) -> dict:
        cumulative, running = [], 0
        for bound, count in zip((*self.buckets, "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append([bound, running])
        return {"buckets": cumulative, "sum_s": round(self.sum_s, 3), "count": self.count}


async def watch_loop_lag(
    histogram: LatencyHistogram, tick_s: float = LOOP_LAG_TICK_S, clock=time.monotonic
) -> None:
    """Sleep `tick_s` again and again and count how late each wake-up came: the time
    some callback (a batch's work, a commit's preparation) held the one event loop of
    both stages, which every commit timer waits out. Runs until cancelled."""
    while True:
        began = clock()
        await asyncio.sleep(tick_s)
        histogram.observe_ms([max(0.0, clock() - began - tick_s) * 1000])
