"""The loop's supervisor and its bounded stop, for either stage.

An exception that escapes a turn is logged with its traceback and every partition is
opened again from what is committed, with backoff; a partition that cannot be opened
is tried again the same way, without holding the others back; a partition with
records waiting and no progress is reported (app/progress.py). A stop lets the turn
under way finish, commits what was read and releases everything within `stop_by`.
"""

from __future__ import annotations

import asyncio
import logging
import time

from mode import Service

from app.progress import ProgressWatch
from app.throttle import Backoff

log = logging.getLogger(__name__)


class SupervisedLoop(Service):
    name = "stage"  # in log lines

    def __init__(self, stuck_after_ms: int = 120_000, **kwargs) -> None:
        super().__init__(**kwargs)
        self._lock = asyncio.Lock()  # the loop's turns and the rebalances, one at a time
        self.stopping = False  # the loop ends after its current turn
        self.stop_by = time.monotonic() + 3600.0  # set by stop_within
        self.progress = ProgressWatch(self.name, stuck_after_ms / 1000)
        self.unopened: set[int] = set()  # assigned here, not open yet (opening failed)
        # partition -> (not open since, next attempt at): monotonic times
        self._opening: dict[int, tuple[float, float]] = {}
        self._open_failures: dict[int, int] = {}
        self.loop_task: asyncio.Task | None = None
        self.loop_errors = 0  # unexpected exceptions the supervisor caught
        self.last_loop_error: str | None = None
        self.last_turn = time.monotonic()  # when the loop last finished a turn

    def start_loop(self) -> None:
        """Both stages start their loop the same way, at the end of their start."""
        self.loop_task = asyncio.ensure_future(self.run_loop())

    async def run_loop(self) -> None:
        """Turn the loop until the stage stops. An unexpected exception is a bug or a
        failure nobody classified: it is logged with its traceback, the turn it broke is
        given up at once (under the lock, so neither a rebalance nor a stop commits
        what it left half done: `abandon_all`), and after a backoff every partition is
        opened again from what is committed, as after a failed commit."""
        self.loop_task = asyncio.current_task()
        backoff = Backoff(1.0, 30.0)
        while not self.stopping:
            try:
                if self.unopened:
                    async with self._lock:
                        await self.open_unopened()
                await self.poll()
                self.last_turn = time.monotonic()
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.loop_errors += 1
                self.last_loop_error = f"{type(exc).__name__}: {exc}"[:500]
                delay = backoff.next()
                log.exception(
                    "%s: unexpected error in the loop (%d so far); every partition is "
                    "opened again from what is committed in %.1fs",
                    self.name,
                    self.loop_errors,
                    delay,
                )
                async with self._lock:
                    abandoned = await self.abandon_all()
                for partition in abandoned:
                    self._opening[partition] = (time.monotonic(), time.monotonic() + delay)
                await asyncio.sleep(delay)

    @property
    def alive(self) -> bool:
        """The loop runs (or has not started yet)."""
        return self.loop_task is None or not self.loop_task.done()

    async def open_unopened(self) -> None:
        """Open the partitions assigned here that are not open yet, each when its own
        backoff allows: one that fails is logged, counted and tried again later,
        without holding the others back."""
        now = time.monotonic()
        for partition in list(self._opening):
            if partition not in self.unopened:
                del self._opening[partition]
        for partition in sorted(self.unopened):
            since, retry_at = self._opening.get(partition, (now, now))
            if now < retry_at:
                continue
            try:
                await self.open_partition(partition)
            except Exception as exc:
                self.open_failed(partition, exc, since)
                continue
            self.unopened.discard(partition)
            self._opening.pop(partition, None)
            self._open_failures.pop(partition, None)

    def open_failed(self, partition: int, exc: Exception, since: float | None = None) -> None:
        """An opening of `partition` failed: logged, counted, and tried again by
        `open_unopened` after a backoff that grows with each failure."""
        self.unopened.add(partition)
        self.loop_errors += 1
        self.last_loop_error = f"{type(exc).__name__}: {exc}"[:500]
        failures = self._open_failures.get(partition, 0) + 1
        self._open_failures[partition] = failures
        delay = min(30.0, 2.0 ** (failures - 1))
        if since is None:
            since = self._opening.get(partition, (time.monotonic(), 0.0))[0]
        self._opening[partition] = (since, time.monotonic() + delay)
        log.error(
            "%s: opening partition %d failed (%d times); trying again in %.0fs",
            self.name,
            partition,
            failures,
            delay,
            exc_info=exc,
        )

    def not_opened(self) -> list[tuple[int, float]]:
        """(partition, seconds) of partitions assigned here that have not opened for
        longer than the stuck time: reported as stuck, as one that makes no progress."""
        now = time.monotonic()
        return [
            (p, round(now - since, 1))
            for p, (since, _) in sorted(self._opening.items())
            if p in self.unopened and now - since >= self.progress.stuck_after_s
        ]

    async def on_stop(self) -> None:
        """SIGTERM: commit what was read, leave the group, release the partitions and
        clients, all within `stop_by`; the partitions' next owner reads again what was
        not committed (and the log says how much)."""
        await self.stop_loop(self.loop_task, grace_s=self.left_s(0.25))
        if not self.outages.down("kafka"):
            await self.bounded(self.commit_all(), 0.3, "the last commit")
        left = self.uncommitted()
        if left:
            log.warning(
                "%s: stopped with input read and not committed (partition: records) %s; "
                "the partitions' next owner reads it again",
                self.name,
                left,
            )
        await self.release_sinks()
        if self.consumer is not None:
            await self.bounded(self.consumer.stop(), 0.5, "leaving the consumer group")
        await self.bounded(
            asyncio.gather(*(c.close() for c in self.release_partitions())), 0.8, "producers"
        )
        for close in self.closers():
            await self.bounded(close(), 0.5)

    async def release_sinks(self) -> None:
        """At a stop, after the last commit: sinks of the stage's own flushed."""

    def closers(self) -> list:
        """At a stop: what closes the stage's other clients (admin, readers), last."""
        return []

    async def stop_within(self, budget_s: float) -> None:
        """Stop within `budget_s` whatever is away (SHUTDOWN_TIMEOUT); what cannot be
        committed in that time is left to the next owner, and the log says what."""
        self.stop_by = time.monotonic() + budget_s
        await self.stop()

    def left_s(self, share: float = 1.0) -> float:
        """A share of the time left until `stop_by` (at least 0.1 s)."""
        return max(0.1, (self.stop_by - time.monotonic()) * share)

    async def bounded(self, awaitable, share: float = 1.0, what: str = "") -> bool:
        """Await within a share of the time left; False (and said) when it ran out or
        failed: the stop goes on regardless."""
        try:
            await asyncio.wait_for(awaitable, self.left_s(share))
            return True
        except Exception as exc:
            if what:
                log.warning("%s: %s did not finish while stopping (%s)", self.name, what,
                            type(exc).__name__)  # fmt: skip
            return False

    async def stop_loop(self, task: asyncio.Task | None, grace_s: float = 3.0) -> None:
        """Let the loop finish its turn (a commit under way completes), then stop it; past
        `grace_s` it is cancelled wherever it waits (a fetch, a commit, a reopening)."""
        self.stopping = True
        if task is None or task.done():
            return
        done, _ = await asyncio.wait([task], timeout=grace_s)
        if not done:
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # -- what the executor provides ----------------------------------------------

    async def poll(self) -> None:
        raise NotImplementedError

    async def open_partition(self, partition: int) -> None:
        raise NotImplementedError

    async def abandon_all(self) -> list[int]:
        """Give up every open partition as it stands, uncommitted work dropped (its
        records are read again), and put it in `unopened`; returns them."""
        raise NotImplementedError

    async def commit_all(self) -> None:
        raise NotImplementedError

    def uncommitted(self) -> dict[int, int]:
        raise NotImplementedError

    def release_partitions(self) -> list:
        raise NotImplementedError
