"""Event-time clocks: per source partition stream time and the merged watermark.

docs/contract.md, Event time. A source clock judges lateness where the record is read; a merged
watermark is the minimum over the source partitions that can still send, so a
window closes only when every source has passed its end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NO_TIME = -(2**62)


@dataclass
class SourceClock:
    """Stream time of one source partition and whether an event is late against it."""

    lateness_ms: int
    stream_time: int = NO_TIME

    @property
    def watermark(self) -> int:
        return NO_TIME if self.stream_time == NO_TIME else self.stream_time - self.lateness_ms

    def observe(self, t_ms: int) -> bool:
        """Take one event; return True when it is late (older than the watermark)."""
        late = t_ms < self.watermark
        if t_ms > self.stream_time:
            self.stream_time = t_ms
        return late

    def advance_idle(self, to_stream_time: int) -> None:
        """An idle partition stops holding others back: move its time forward, never back."""
        if to_stream_time > self.stream_time:
            self.stream_time = to_stream_time


@dataclass
class SourceMark:
    """What a stateful partition last heard from one source partition."""

    watermark: int = NO_TIME
    idle: bool = False
    heard_s: float = 0.0  # wall time of its last mark (not part of the state)


# An idle source repeats its mark twice within this time (app/source/marks.py); its
# claim to be idle holds this long after the last one. A source that went silent (its
# stage stopped, stuck, or Kafka away) stops the wall clock instead of letting it run
# past records that source has not read yet.
IDLE_LEASE_S = 120.0


@dataclass
class MergedWatermark:
    """Minimum over source partitions; idle sources excluded; all idle follows wall time,
    for as long as every source keeps saying it is idle (IDLE_LEASE_S)."""

    sources: int
    marks: dict[int, SourceMark] = field(default_factory=dict)
    all_idle_since_wall: float | None = None
    all_idle_base: int = NO_TIME
    value: int = NO_TIME
    idle_lease_s: float = IDLE_LEASE_S

    def update(self, source: int, watermark: int, idle: bool, sources: int, wall_s: float) -> int:
        self.sources = max(self.sources, sources)
        mark = self.marks.setdefault(source, SourceMark())
        mark.watermark = max(mark.watermark, watermark)
        mark.idle = idle
        mark.heard_s = wall_s
        return self.recompute(wall_s)

    def recompute(self, wall_s: float) -> int:
        """Recompute and return the merged watermark; it never goes back."""
        if len(self.marks) < self.sources:
            return self.value
        busy = [m.watermark for m in self.marks.values() if not m.idle]
        if busy:
            self.all_idle_since_wall = None
            candidate = min(busy)
        else:
            if self.all_idle_since_wall is None:
                self.all_idle_since_wall = wall_s
                self.all_idle_base = max(m.watermark for m in self.marks.values())
            leased = min(m.heard_s for m in self.marks.values()) + self.idle_lease_s
            elapsed = max(0.0, min(wall_s, leased) - self.all_idle_since_wall)
            candidate = self.all_idle_base + int(elapsed * 1000)
        if candidate > self.value:
            self.value = candidate
        return self.value
