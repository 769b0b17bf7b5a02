"""Notices that this worker stood still (SIGSTOP, a paused VM) long enough for the
consumer group to have handed its user-keyed partitions to another worker.

The source stage is fenced by its Kafka transactions; the stateful stage's changelog
and PostgreSQL writes are not. A worker that wakes after more than the session
timeout has been removed from the group for sure (its last heartbeat is older than
that), so its writers hold still until the rebalance that follows has told it what
it owns now (`reset`, on assignment); if none comes within twice the session timeout
the group kept it after all, and it carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time


class StallGuard:
    def __init__(self, session_timeout_s: float) -> None:
        self.limit_s = session_timeout_s
        self._last = time.monotonic()
        self._settled = asyncio.Event()
        self._settled.set()
        self.stalls = 0

    def alive(self) -> bool:
        """Call often (a timer does, and every writer before it writes): False from the
        first call after a stall longer than the session timeout until it is settled."""
        now = time.monotonic()
        if now - self._last > self.limit_s and self._settled.is_set():
            self._settled.clear()
            self.stalls += 1
        self._last = now
        return self._settled.is_set()

    async def settled(self) -> None:
        """Until the next assignment, or twice the session timeout if none comes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), 2 * self.limit_s)
        self.reset()

    def reset(self) -> None:
        """A new assignment: what the worker holds from now on is its own again."""
        self._settled.set()
        self._last = time.monotonic()
