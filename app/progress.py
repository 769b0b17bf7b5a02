"""Which partitions have records to process and make no progress (docs/contract.md,
Bad input: no single record can stop a partition, and one that stops is reported).

A stage tells its `ProgressWatch` after each turn where each partition's committed
position stands and how many records are behind it. A partition whose position has not
moved for `stuck_after_s` while records were waiting is stuck: `/api/health`,
`/metrics` and one log line say so, with the offset it is stuck at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    position: int
    since: float  # when the position last moved, or the partition last had nothing to do
    lag: int
    reported: bool = False


@dataclass(frozen=True)
class Stuck:
    partition: int
    offset: int  # the committed position: the first record not yet through
    lag: int
    for_s: float


class ProgressWatch:
    def __init__(
        self, stage: str, stuck_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stage = stage
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._seen: dict[int, _Seen] = {}

    def observe(self, partition: int, position: int, lag: int | None) -> None:
        now = self._clock()
        seen = self._seen.get(partition)
        lag = lag or 0
        if seen is None or seen.position != position or lag == 0:
            if seen is not None and seen.reported:
                log.info(
                    "%s: partition %d moves again (offset %d)", self.stage, partition, position
                )
            self._seen[partition] = _Seen(position, now, lag)
            return
        seen.lag = lag
        if not seen.reported and now - seen.since >= self.stuck_after_s:
            seen.reported = True
            log.warning(
                "%s: partition %d has had %d records to process and no progress for %.0fs: "
                "stuck at offset %d",
                self.stage,
                partition,
                lag,
                now - seen.since,
                position,
            )

    def forget(self, partitions) -> None:
        for partition in partitions:
            self._seen.pop(partition, None)

    def stuck(self) -> list[Stuck]:
        now = self._clock()
        return [
            Stuck(p, seen.position, seen.lag, round(now - seen.since, 1))
            for p, seen in sorted(self._seen.items())
            if seen.lag and now - seen.since >= self.stuck_after_s
        ]
