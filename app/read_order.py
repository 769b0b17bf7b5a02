"""Where a record of one source partition stands relative to what was already read.

Faust can hand the stage a partition's records with a hole in them: a seek racing a
fetch around a rebalance or recovery drops records, and its consumer then counts the
hole as done, so a commit could pass offsets that never reached the lake. A hole is
therefore never jumped: the stage seeks back to the first missing offset and holds
what arrives past the hole until the re-read reaches it. Offsets that are really absent
from the log (transaction markers, compaction) come back missing every time; after
GAP_SEEKS re-reads the hole is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

GAP_WAIT_S = 2.0  # how long a re-read may take before it is tried again
GAP_SEEKS = 2


class Verdict(Enum):
    IN_LAKE = "in_lake"  # written by an earlier owner: skip, may be acknowledged
    AGAIN = "again"  # read before and still buffered: skip, hold its acknowledgement
    NEW = "new"  # the next offset: process it
    GAP_ACCEPTED = "gap_accepted"  # past a hole that re-reads did not fill: process it
    SEEK = "seek"  # past a hole: seek back to `expected`, hold this record
    AHEAD = "ahead"  # past a hole, a re-read is under way: hold this record


@dataclass
class ReadOrder:
    skip_through: int  # offsets up to here are in the lake
    last_read: int  # the highest offset processed (or skip_through)
    _gap: tuple[int, float, int] | None = None  # (expected offset, when sought, seeks)

    @property
    def expected(self) -> int:
        return self.last_read + 1

    def classify(self, offset: int, now: float) -> Verdict:
        if offset <= self.skip_through:
            return Verdict.IN_LAKE
        if offset <= self.last_read:
            return Verdict.AGAIN
        expected = self.expected
        if offset == expected or self.last_read < 0:
            return Verdict.NEW  # a fresh partition may start anywhere (retention)
        gap = self._gap
        if gap is None or gap[0] != expected:
            self._gap = (expected, now, 1)
            return Verdict.SEEK
        _, sought_at, seeks = gap
        if now - sought_at < GAP_WAIT_S:
            return Verdict.AHEAD
        if seeks < GAP_SEEKS:
            self._gap = (expected, now, seeks + 1)
            return Verdict.SEEK
        return Verdict.GAP_ACCEPTED

    def read(self, offset: int) -> None:
        """`offset` was processed (NEW or GAP_ACCEPTED)."""
        self.last_read = offset
        self._gap = None
