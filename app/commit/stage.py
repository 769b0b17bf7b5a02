"""What the loops of both stages share around their checkpoints: a consumer group whose
rebalances wait for the loop (one lock), a fetch that waits no longer than until the
next commit is due, fenced partitions opened again while the group still assigns
them here, and the loop's supervisor: an exception that escapes a turn is logged with
its traceback and every partition is opened again from what is committed, with
backoff; a partition that cannot be opened is tried again the same way; a partition
with records waiting and no progress is reported (app/progress.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from mode import Service

from app.aiokafka_internals import fetch_position
from app.errors import CommitFailed, Fenced
from app.outages import Outages
from app.progress import ProgressWatch
from app.throttle import Backoff

Result = TypeVar("Result")

log = logging.getLogger(__name__)
MAX_RECORDS = 20_000
# A partition fenced while the group still assigns it here (an older member woke up
# and opened it) is opened again after this long: by then that member knows it lost it.
REOPEN_FENCED_S = 10.0


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stage: BatchStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked) -> None:
        self.stage.rebalancing = True
        await self.stage.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned) -> None:
        try:
            await self.stage.assign({tp.partition for tp in assigned})
        finally:
            self.stage.rebalancing = False


class BatchStage(Service):
    name = "stage"  # in log lines
    topic = ""  # the input topic

    def __init__(
        self,
        commit_interval_ms: int,
        outages: Outages | None = None,
        stuck_after_ms: int = 120_000,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.outages = outages or Outages()  # says when Kafka is away, and back
        self.interval_s = commit_interval_ms / 1000
        self.consumer = None
        self._lock = asyncio.Lock()  # the loop's turns and the rebalances, one at a time
        self._generation = 0  # bumped by every assignment change and re-positioning
        self._last_commit = time.monotonic()
        self.rebalancing = False  # between a revocation and the assignment after it
        self.stopping = False  # the loop ends after its current turn
        self.stop_by = time.monotonic() + 3600.0  # set by stop_within
        self.fenced: dict[int, float] = {}  # partition -> when its commit met a fence
        self.progress = ProgressWatch(self.name, stuck_after_ms / 1000)
        self.unopened: set[int] = set()  # assigned here, not open yet (opening failed)
        # partition -> (not open since, next attempt at): monotonic times
        self._opening: dict[int, tuple[float, float]] = {}
        self._open_failures: dict[int, int] = {}
        self.loop_task: asyncio.Task | None = None
        self.loop_errors = 0  # unexpected exceptions the supervisor caught
        self.last_loop_error: str | None = None
        self.last_turn = time.monotonic()  # when the loop last finished a turn
        self.commits = 0
        self.aborts = 0  # commits that failed (the partition was opened again)
        self.refused_by_fence = 0  # commits refused: another worker owns the partition

    # -- the supervised loop ---------------------------------------------------

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
                self.loop_errors += 1
                self.last_loop_error = f"{type(exc).__name__}: {exc}"[:500]
                failures = self._open_failures.get(partition, 0) + 1
                self._open_failures[partition] = failures
                delay = min(30.0, 2.0 ** (failures - 1))
                self._opening[partition] = (since, time.monotonic() + delay)
                log.exception(
                    "%s: opening partition %d failed (%d times); trying again in %.0fs",
                    self.name,
                    partition,
                    failures,
                    delay,
                )
                continue
            self.unopened.discard(partition)
            self._opening.pop(partition, None)
            self._open_failures.pop(partition, None)

    def not_opened(self) -> list[tuple[int, float]]:
        """(partition, seconds) of partitions assigned here that have not opened for
        longer than the stuck time: reported as stuck, as one that makes no progress."""
        now = time.monotonic()
        return [
            (p, round(now - since, 1))
            for p, (since, _) in sorted(self._opening.items())
            if p in self.unopened and now - since >= self.progress.stuck_after_s
        ]

    def watch(self, partition: int, progress: int, committed: int, read_next: int) -> None:
        """Tell the progress watch where `partition` stands: `progress` moves when it
        does useful work; the work waiting is what is left to fetch (the high watermark
        less the fetch position, which passes transaction markers: an idle partition of
        a transactional topic has none) plus what was read and not committed."""
        tp = TopicPartition(self.topic, partition)
        high = self.consumer.highwater(tp)
        fetched = fetch_position(self.consumer, tp)
        unread = 0 if high is None else max(0, high - (read_next if fetched is None else fetched))
        self.progress.observe(partition, progress, unread + max(0, read_next - committed))

    async def commit_partition(self, partition: int, checkpoint, next_offset: int, metadata=""):
        """Commit one partition's checkpoint: what it made visible, or None when it did
        not go through. Fenced (another worker owns the partition now): the partition is
        given up here and paused, and opened again only if the group still assigns it
        here after REOPEN_FENCED_S. Failed or unknown: opened again at once from what
        Kafka holds (the only safe answer to an unknown outcome), unless stopping."""
        try:
            committed = await checkpoint.commit(next_offset, metadata)
        except Fenced as exc:
            log.warning("%s: %s; partition %d is left to it", self.name, exc, partition)
            self.refused_by_fence += 1
            await self.give_up(partition)
            self.fence(partition)
            self.consumer.pause(TopicPartition(self.topic, partition))
            return None
        except CommitFailed as exc:
            self.aborts += 1
            await self.commit_failed(exc)
            if not self.stopping:  # stopping: the next owner reads it again
                await self.reopen(partition)
            return None
        self.commits += 1
        self.outages.ok("kafka")
        return committed

    async def commit_failed(self, exc: CommitFailed) -> None:
        """A commit did not go through: Kafka was away, or the stage's own answer."""
        self.kafka_failed(exc)

    async def give_up(self, partition: int) -> None:
        """A fenced partition's local resources, released (nothing by default)."""

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

    async def commit_all(self) -> None:
        raise NotImplementedError

    def uncommitted(self) -> dict[int, int]:
        """Records read and not committed, per partition."""
        raise NotImplementedError

    async def release_sinks(self) -> None:
        """At a stop, after the last commit: sinks of the stage's own flushed."""

    def release_partitions(self) -> list:
        """At a stop: every partition's local resources released; their checkpoints."""
        raise NotImplementedError

    def closers(self) -> list:
        """At a stop: what closes the stage's other clients (admin, readers), last."""
        return []

    async def open_partition(self, partition: int) -> None:
        raise NotImplementedError

    async def abandon_all(self) -> list[int]:
        """Give up every open partition as it stands, uncommitted work dropped (its
        records are read again), and put it in `unopened`; returns them."""
        raise NotImplementedError

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

    def kafka_failed(self, exc: BaseException) -> None:
        """A Kafka request failed and is tried again (app/outages.py says so)."""
        self.outages.failed("kafka", f"{self.name}: {type(exc).__name__}: {exc}"[:300])

    async def retry(self, call: Callable[[], Awaitable[Result]]) -> Result:
        """`call()` until it gets through, with backoff while Kafka cannot be reached."""
        backoff = Backoff(0.5, 30)
        while True:
            try:
                return await call()
            except KafkaError as exc:
                self.kafka_failed(exc)
                await asyncio.sleep(backoff.next())

    def listener(self) -> ConsumerRebalanceListener:
        return _Rebalance(self)

    async def assign(self, partitions: set[int]) -> None:
        raise NotImplementedError

    async def revoke(self, partitions: set[int]) -> None:
        raise NotImplementedError

    async def reopen(self, partition: int) -> None:
        """Open a partition again: fence, read where it stands, position it."""
        raise NotImplementedError

    async def fetch(self) -> tuple[int, dict]:
        """(generation before the fetch, fetched batches); waits at most until the next
        commit is due."""
        generation = self._generation
        due_in = self.interval_s - (time.monotonic() - self._last_commit)
        batches = await self.consumer.getmany(
            timeout_ms=max(0, int(due_in * 1000)), max_records=MAX_RECORDS
        )
        return generation, batches

    def commit_due(self, commit: bool | None) -> bool:
        """`commit` decides when given (unit tests step the loop); else the interval."""
        if commit is None:
            return time.monotonic() - self._last_commit >= self.interval_s
        return commit

    def fence(self, partition: int) -> None:
        self.fenced[partition] = time.monotonic()

    async def reopen_fenced(self) -> None:
        if not self.fenced:
            return
        assigned = {tp.partition for tp in self.consumer.assignment()}
        now = time.monotonic()
        for partition, since in list(self.fenced.items()):
            if partition not in assigned:
                del self.fenced[partition]
            elif now - since >= REOPEN_FENCED_S:
                log.info(
                    "%s: partition %d is still assigned here; opening it again",
                    self.name,
                    partition,
                )
                await self.reopen(partition)
