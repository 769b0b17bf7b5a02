"""Retry with backoff, and logging at most once per interval: the two shapes every
sink and stage needs when something outside it is down."""

from __future__ import annotations

import time
from collections.abc import Hashable


class LogThrottle:
    """`allow(key)` is True at most once per `interval_s` for each key."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[Hashable, float] = {}

    def allow(self, key: Hashable = None) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.interval_s:
            self._last[key] = now
            return True
        return False


class Backoff:
    """Doubling delays from `first_s` up to `max_s`; `reset()` after a success."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.delay_s = first_s

    def next(self) -> float:
        delay, self.delay_s = self.delay_s, min(self.delay_s * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self.delay_s = self.first_s
