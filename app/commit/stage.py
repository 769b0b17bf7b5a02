"""The executor both stages run around their tasks and checkpoints: a consumer group
whose rebalances wait for the loop (one lock), a fetch that waits no longer than until
the next commit is due, each fetched batch handed to its partition's task, the tasks'
commits when due, a partition reopened after a failed commit, and fenced partitions
opened again while the group still assigns them here. The loop is supervised
(app/commit/supervisor.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiokafka import TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from app.aiokafka_internals import fetch_position
from app.commit.supervisor import SupervisedLoop
from app.commit.task import PartitionTask
from app.errors import CommitFailed, Fenced
from app.outages import Outages
from app.throttle import Backoff

Result = TypeVar("Result")

log = logging.getLogger(__name__)
MAX_RECORDS = 20_000
# A partition fenced while the group still assigns it here (an older member woke up
# and opened it) is opened again after this long: by then that member knows it lost it.
REOPEN_FENCED_S = 10.0
# A revocation's last commit: longer than this, and the next owner reads it again.
REVOKE_COMMIT_S = 10.0


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


class BatchStage(SupervisedLoop):
    """The executor both stages run: one task per input partition (app/commit/task.py),
    fetched batches handed to them, their checkpoints committed when due, a partition
    reopened after a failed or fenced commit, the group's rebalances in between."""

    name = "stage"  # in log lines
    topic = ""  # the input topic

    def __init__(
        self,
        commit_interval_ms: int,
        outages: Outages | None = None,
        stuck_after_ms: int = 120_000,
        **kwargs,
    ) -> None:
        super().__init__(stuck_after_ms, **kwargs)
        self.outages = outages or Outages()  # says when Kafka is away, and back
        self.interval_s = commit_interval_ms / 1000
        self.consumer = None
        self.tasks: dict[int, PartitionTask] = {}  # one per input partition open here
        self._generation = 0  # bumped by every assignment change and re-positioning
        self._last_commit = time.monotonic()
        self.rebalancing = False  # between a revocation and the assignment after it
        self.fenced: dict[int, float] = {}  # partition -> when its commit met a fence
        self.commits = 0
        self.aborts = 0  # commits that failed (the partition was opened again)
        self.refused_by_fence = 0  # commits refused: another worker owns the partition

    # -- around a commit -------------------------------------------------------

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

    # -- the executor: the same turn, commit and rebalance for every stage's tasks -----

    def now(self) -> float:
        """The time a turn hands its tasks."""
        return time.time()

    async def poll(self, commit: bool | None = None) -> None:
        """One turn of the loop: fetch, hand the batches to the tasks, commit when due."""
        await self.before_fetch()
        generation, batches = await self.fetch()
        async with self._lock:
            if generation != self._generation:
                self._read_again(batches)
                return
            now = self.now()
            for tp, records in batches.items():
                task = self.tasks.get(tp.partition)
                if task is not None and tp.partition not in self.fenced:
                    task.apply(records, now)
            for partition, task in self.tasks.items():
                if partition not in self.fenced:
                    task.tick(now)
            if self.commit_due(commit):
                await self.commit_all()
            await self.reopen_fenced()
            self.after_commit_turn()
            for partition, task in self.tasks.items():
                self.watch(partition, task.progress, task.committed_next, task.read_next)
        self.after_turn()

    def _read_again(self, batches) -> None:
        """A batch fetched across a rebalance or a re-positioning may start where a task
        no longer reads: drop it and read each partition again from its task."""
        for tp in batches:
            task = self.tasks.get(tp.partition)
            if task is not None:
                self.consumer.seek(tp, task.read_next)

    async def commit_all(self, only: set[int] | None = None) -> None:
        """Commit every task that has something to commit. A commit starts with its
        largest piece of work done at once (its records to the checkpoint): the tasks
        start one at a time, with the loop's turn between them, so a commit of the other
        stage that is due waits for one partition's, not all of them (seen as 50-100 ms
        of event loop lag at 10k ev/s)."""
        self._last_commit = time.monotonic()
        tasks = [
            task
            for partition, task in self.tasks.items()
            if partition not in self.fenced and (only is None or partition in only)
        ]
        commits: list[asyncio.Task] = []
        try:
            for task in tasks:
                commits.append(asyncio.create_task(self._commit(task)))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            for commit in commits:
                commit.cancel()
            raise
        await asyncio.gather(*commits)

    async def _commit(self, task: PartitionTask) -> None:
        if task.checkpoint.closed:  # its last commit was cut short: the next owner reads it
            return
        prepared = task.prepare_commit()
        if prepared is None:
            return
        result = await self.commit_partition(
            task.partition, task.checkpoint, prepared.next_offset, prepared.metadata
        )
        if result is not None:
            task.committed(result, prepared)

    def uncommitted(self) -> dict[int, int]:
        """Records read and not committed, per partition."""
        return {
            p: task.read_next - task.committed_next
            for p, task in self.tasks.items()
            if task.read_next > task.committed_next
        }

    async def assign(self, partitions: set[int]) -> None:
        async with self._lock:
            self.assigned(partitions)
            new = sorted(partitions - set(self.tasks))
            if not new:
                return
            self.unopened.update(new)  # until open; each tried again alone if this fails
            try:
                await self.open_tasks(new, {})
            except Exception:  # each is tried again on its own by the supervisor
                log.exception("%s: opening partitions %s failed; trying again", self.name, new)

    async def open_partition(self, partition: int) -> None:
        await self.open_tasks([partition], {})

    async def reopen(self, partition: int) -> None:
        """After a failed or fenced commit: open the partition again from what Kafka
        holds; the task it replaces hands over what it may keep (a store, a buffer)."""
        self.fenced.pop(partition, None)
        previous = self.tasks.pop(partition, None)
        if previous is not None:
            await previous.checkpoint.close()
        try:
            await self.open_tasks([partition], {} if previous is None else {partition: previous})
        except Exception as exc:  # tried again with backoff; the other partitions go on
            self.open_failed(partition, exc)

    def opened(self, task: PartitionTask) -> None:
        """`task` is open: it takes its partition's input from `read_next` on."""
        self.tasks[task.partition] = task
        self.fenced.pop(task.partition, None)
        self.unopened.discard(task.partition)
        self._opening.pop(task.partition, None)
        self._open_failures.pop(task.partition, None)
        self._generation += 1
        tp = TopicPartition(self.topic, task.partition)
        self.consumer.seek(tp, task.read_next)
        self.consumer.resume(tp)

    async def revoke(self, partitions: set[int]) -> None:
        async with self._lock:
            self._generation += 1
            try:
                await asyncio.wait_for(self.commit_all(only=partitions), REVOKE_COMMIT_S)
            except Exception as exc:  # the next owner reads it again
                log.warning("%s: commit before giving up %s failed: %s", self.name,
                            partitions, exc)  # fmt: skip
            await self.revoked(partitions)
            self.unopened -= partitions
            self.progress.forget(partitions)
            for partition in partitions:
                await self.close_task(partition)
                self.fenced.pop(partition, None)

    async def abandon_all(self) -> list[int]:
        """After an unexpected error: every open partition given up as it stands, what it
        did not commit dropped (read again when it opens again), and put in `unopened`."""
        partitions = sorted(p for p in self.tasks if p not in self.fenced)
        self.abandoned(set(partitions))
        for partition in partitions:
            await self.close_task(partition)
        self.progress.forget(partitions)
        self.unopened.update(partitions)
        return partitions

    async def close_task(self, partition: int) -> None:
        task = self.tasks.pop(partition, None)
        if task is not None:
            task.release()
            await task.checkpoint.close()

    async def give_up(self, partition: int) -> None:
        """A fenced partition's local resources, released (nothing by default: the
        task stays, paused, and hands what it keeps to the reopening)."""

    def release_partitions(self) -> list:
        """At a stop: every task's local resources released; their checkpoints."""
        tasks, self.tasks = list(self.tasks.values()), {}
        for task in tasks:
            task.release()
        return [task.checkpoint for task in tasks]

    # -- what each stage adds --------------------------------------------------

    async def open_tasks(self, partitions: list[int], previous: dict[int, PartitionTask]):
        """Fence each partition's previous owner, restore what it needs, position it
        (`opened`). `previous`: the task a reopened partition had, for what it keeps."""
        raise NotImplementedError

    async def before_fetch(self) -> None:
        """Before a turn's fetch (the source waits for room in the lake buffer)."""

    def after_commit_turn(self) -> None:
        """Under the turn's lock, after its commits."""

    def after_turn(self) -> None:
        """After the turn, outside its lock."""

    def assigned(self, partitions: set[int]) -> None:
        """The group assigned `partitions` here (before they open)."""

    async def revoked(self, partitions: set[int]) -> None:
        """`partitions` leave this worker: their last commit is done, tasks still open."""

    def abandoned(self, partitions: set[int]) -> None:
        """`partitions` are given up after an unexpected error, tasks still open."""
