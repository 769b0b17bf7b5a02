"""Counters the worker keeps for logs, the stats endpoint and metrics."""

from __future__ import annotations

import time
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
    last_late_log: float = -1e9


@dataclass
class Stats:
    partitions: dict[int, PartitionStats] = field(default_factory=dict)
    dead_letter_reasons: Counter = field(default_factory=Counter)
    skipped: int = 0
    rereads: int = 0  # seeks back over a hole in a partition's offsets (app/read_order.py)
    lake_rows: int = 0
    lake_errors: int = 0
    lake_last_error: str | None = None
    lake_flush_s: float = 0.0

    def _part(self, partition: int) -> PartitionStats:
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = PartitionStats()
        return part

    def on_event(self, partition: int, late: bool, clock: SourceClock) -> None:
        part = self._part(partition)
        part.events += 1
        if late:
            part.late += 1
        part.stream_time = clock.stream_time
        part.watermark = clock.watermark

    def on_dead_letter(self, partition: int, reason: str) -> None:
        self._part(partition).dead_letters += 1
        self.dead_letter_reasons[reason] += 1

    def late_logged(self, partition: int) -> bool:
        """True at most once a minute per partition: whether to log this late event."""
        part = self._part(partition)
        now = time.monotonic()
        if now - part.last_late_log >= 60:
            part.last_late_log = now
            return True
        return False

    @property
    def totals(self) -> dict[str, int]:
        return {
            "events": sum(p.events for p in self.partitions.values()),
            "late": sum(p.late for p in self.partitions.values()),
            "dead_letters": sum(p.dead_letters for p in self.partitions.values()),
        }
