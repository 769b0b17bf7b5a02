"""The stateful stage: a transactional consume-process-produce loop over the user-keyed
topic, written like the source stage and committing through the same protocol
(app/commit/checkpoint.py).

Its own aiokafka consumer (read_committed, group `<APP_ID>-stateful`) hands fetched
batches straight to each partition's aggregator (app/stateful/partition.py). Every
SINK_FLUSH (500 ms) each partition that moved commits one Kafka transaction: its changed
state keys and its position into the compacted changelog (app/stateful/changelog.py),
with its input offset. Only once that is visible does the local RocksDB take the
same records (app/stateful/state.py) and PostgreSQL the rows (app/sinks/postgres.py).

A partition is opened the same way whether it was just assigned or its commit failed:
its checkpoint first (fencing any previous owner), then its state restored from the
local store and the changelog's end (app/stateful/restore.py), then the input read
from the offset that state covers. The group's committed offset is never used to
position anything.

The Faust agent in agents/stateful.py runs `run`, the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from app import failpoints
from app.aiokafka_internals import group_generation
from app.commit.checkpoint import PartitionCheckpoint
from app.commit.stage import BatchStage
from app.kafka_clients import KafkaClients, create_topics, partition_count
from app.settings import Settings
from app.stateful import changelog
from app.stateful.partition import StatefulPartition
from app.stateful.restore import in_thread, restore
from app.stateful.state import LocalState

log = logging.getLogger(__name__)


class StatefulStage(BatchStage):
    name = "stateful"

    def __init__(
        self, settings: Settings, sink, clients: KafkaClients | None = None, **kwargs
    ) -> None:
        # Its commits hand rows to PostgreSQL, which they reach SINK_FLUSH after changing
        # at most; committing more often costs a transaction per partition each time.
        super().__init__(
            max(settings.commit_interval_ms, settings.sink_flush_ms),
            stuck_after_ms=settings.stuck_after_ms,
            **kwargs,
        )
        self.settings = settings
        self.sink = sink  # app.sinks.postgres.PostgresSink
        self.clients = clients or KafkaClients(settings)
        self.topic = settings.internal_topic
        self.group_id = f"{settings.app_id}-stateful"
        self.changelog_topic = changelog.topic_name(settings.app_id, settings.partitions)
        self.store_dir = Path(settings.state_dir) / changelog.store_name(settings.partitions)
        self.parts: dict[int, StatefulPartition] = {}
        self.reader = None  # restores read the changelog with it
        self.admin = None
        self._started_consumer = asyncio.Event()
        # Numbers of the batches handed to PostgreSQL, which confirms them in order: one
        # sequence for every partition and ownership, so a number confirms only what was
        # handed over under it.
        self._batches = itertools.count(1)
        self.restores = 0
        self.wall = time.monotonic  # what moves time on while every source is idle

    # -- lifecycle -----------------------------------------------------------

    async def on_start(self) -> None:
        settings = self.settings
        self.admin = self.clients.admin()
        await self.admin.start()
        await self._warn_of_old_state()
        await create_topics(
            self.admin,
            [
                NewTopic(self.topic, settings.partitions, settings.replication_factor),
                NewTopic(
                    self.changelog_topic,
                    settings.partitions,
                    settings.replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                ),
            ],
        )
        # A topic just created may not be in the cluster's metadata yet: a consumer that
        # subscribed then found no partitions and waited for its next metadata refresh
        # (five minutes) before reading anything (seen once in the bench).
        await partition_count(self.admin, self.topic)
        self.reader = self.clients.reader()
        await self.reader.start()
        # it commits every SINK_FLUSH: no need to fetch each record as soon as it lands
        self.consumer = self.clients.consumer(
            self.group_id, fetch_min_bytes=1 << 20, fetch_max_wait_ms=100
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=self.listener())
        self._started_consumer.set()

    async def _warn_of_old_state(self) -> None:
        """Earlier versions kept this state in a Faust table or in a changelog of
        another format: say what changes."""
        topics = await self.admin.list_topics()
        old = changelog.earlier_state_topics(self.settings.app_id, topics, self.changelog_topic)
        if old and self.changelog_topic not in topics:
            log.warning(
                "stateful: %s holds the state of an earlier version; this one keeps it in "
                "%s, built anew from the user-keyed topic's earliest offset: windows older "
                "than that topic's retention keep their PostgreSQL rows as they are. To "
                "start over instead, stop every worker and delete %s, %s and the "
                "PostgreSQL tables. %s can go once this version runs.",
                old[0], self.changelog_topic, self.topic, self.changelog_topic, old[0],
            )  # fmt: skip

    async def run(self) -> None:
        """The loop; agents/stateful.py runs it as the stage's Faust agent."""
        await self._started_consumer.wait()
        try:
            await self.run_loop()
        except asyncio.CancelledError:
            if not self.stopping:
                raise  # Faust's supervisor starts the agent again
        # stopped by on_stop: the agent ends, and is not started again

    async def poll(self, commit: bool | None = None) -> None:
        """One turn of the loop: fetch, apply, commit when due."""
        generation, batches = await self.fetch()
        async with self._lock:
            if generation != self._generation:
                self._read_again(batches)
                return
            wall = self.wall()
            for tp, records in batches.items():
                part = self.parts.get(tp.partition)
                if part is not None:
                    part.apply(records, wall)
            for part in self.parts.values():
                part.tick(wall)
            if self.commit_due(commit):
                await self.commit_all()
            await self.reopen_fenced()
            self._watch_progress()

    def _watch_progress(self) -> None:
        for partition, part in self.parts.items():
            self.watch(partition, part.committed_input, part.committed_input, part.input_next)

    async def abandon_all(self) -> list[int]:
        """After an unexpected error: every partition given up as it stands (what it
        applied and did not commit is restored from the changelog and applied again
        when it opens again)."""
        partitions = sorted(self.parts)
        for partition in partitions:
            await self._close(partition)
        self.progress.forget(partitions)
        self.unopened.update(partitions)
        return partitions

    def uncommitted(self) -> dict[int, int]:
        return {
            p: part.input_next - part.committed_input
            for p, part in self.parts.items()
            if part.input_next > part.committed_input
        }

    def release_partitions(self) -> list:
        parts, self.parts = list(self.parts.values()), {}
        for part in parts:
            part.local.close()
        return [part.checkpoint for part in parts]

    def closers(self) -> list:
        closers = []
        if self.reader is not None:  # a consumer: it stops
            closers.append(self.reader.stop)
        if self.admin is not None:
            closers.append(self.admin.close)
        return closers

    # -- partitions ----------------------------------------------------------

    async def assign(self, partitions: set[int]) -> None:
        async with self._lock:
            # the group generation this assignment belongs to
            self.sink.assign(partitions, group_generation(self.consumer))
            self.unopened |= partitions - set(self.parts)
            await self.open_unopened()

    async def open_partition(self, partition: int) -> None:
        await self._open(partition)

    async def _open(self, partition: int, local: LocalState | None = None) -> None:
        """Fence the previous owner, restore the state, read the input from there."""
        source = TopicPartition(self.topic, partition)
        self.fenced.pop(partition, None)
        self.unopened.add(partition)  # until it is open: the supervisor tries again
        checkpoint = None
        try:
            checkpoint = await PartitionCheckpoint.open(
                self.clients.producer,
                f"{self.topic}-{partition}",  # the topic's name starts with the app id
                source,
                self.group_id,
                stage="stateful",
                on_error=self.kafka_failed,
            )
            if local is None:
                path = self.store_dir / f"p{partition}"
                local = await in_thread(LocalState, path, discard=LocalState.close)
            changelog_tp = TopicPartition(self.changelog_topic, partition)
            timeout_ms = self.settings.session_timeout_ms
            part = await self.retry(
                lambda: restore(local, self.reader, changelog_tp, checkpoint, timeout_ms)
            )
            if part.input_next is None:  # no state yet: the topic's beginning
                offsets = await self.retry(lambda: self.consumer.beginning_offsets([source]))
                part.input_next = part.committed_input = offsets[source]
        except BaseException:
            # cancelled by a revocation, or failed: nothing else holds the store, whose
            # lock would refuse the partition's next opening (restore closes a store it
            # rebuilt; this one may be closed already)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.close()
            if checkpoint is not None:
                with contextlib.suppress(BaseException):  # a second cancel: it closes anyway
                    await asyncio.shield(checkpoint.close())
            raise
        self.parts[partition] = part
        self.unopened.discard(partition)
        self._generation += 1
        self.consumer.seek(source, part.input_next)
        self.consumer.resume(source)
        self.restores += 1
        failpoints.reach("stateful-recovering")
        # everything it holds goes to PostgreSQL again
        batch = next(self._batches)
        self.sink.add(partition, part.aggregator.open_rows(), batch)
        self.sink.add(partition, part.outbox.resend(batch), batch)
        log.info(
            "stateful: partition %d restored in %.1fs (%d changelog records read): input "
            "from offset %d, watermark %d, %d users, %d final rows not yet in PostgreSQL",
            partition,
            part.restore_seconds,
            part.restored_records,
            part.input_next,
            part.aggregator.watermark,
            len(part.aggregator.users),
            len(part.outbox),
        )

    async def revoke(self, partitions: set[int]) -> None:
        async with self._lock:
            self._generation += 1
            owned = [self.parts[p] for p in partitions if p in self.parts]
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(self._commit(part) for part in owned if part.pending)), 10
                )
            except Exception as exc:  # the next owner restores from the changelog
                log.warning("stateful: commit before giving up %s failed: %s", partitions, exc)
            self.unopened -= partitions
            self.progress.forget(partitions)
            for partition in partitions:
                await self._close(partition)
                self.fenced.pop(partition, None)
            self.sink.revoke(partitions)

    async def _close(self, partition: int) -> None:
        part = self.parts.pop(partition, None)
        if part is not None:
            part.local.close()
            await part.checkpoint.close()

    def _read_again(self, batches) -> None:
        """A batch fetched across a re-positioning: read from the state's position."""
        for tp in batches:
            part = self.parts.get(tp.partition)
            if part is not None:
                self.consumer.seek(tp, part.input_next)

    # -- committing ----------------------------------------------------------

    async def commit_all(self) -> None:
        self._last_commit = time.monotonic()
        # a checkpoint closed by a commit cut short at a stop: the next owner restores
        parts = [p for p in self.parts.values() if p.pending and not p.checkpoint.closed]
        # A partition's commit starts with the stage's largest piece of work done at
        # once, its changelog records (`stage_commit`): one partition at a time, with
        # the loop's turn between them, so a source commit that is due waits for one
        # partition's, not all of them (seen as 50-100 ms of event loop lag at 10k ev/s).
        commits: list[asyncio.Task] = []
        try:
            for part in parts:
                commits.append(asyncio.create_task(self._commit(part)))
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            for commit in commits:
                commit.cancel()
            raise
        await asyncio.gather(*commits)

    async def _commit(self, part: StatefulPartition) -> None:
        """Commit one partition; after it is visible, the local store and PostgreSQL."""
        partition = part.partition
        batch = next(self._batches)
        staged = part.stage_commit(
            self.changelog_topic, batch, self.sink.confirmed.get(partition, 0)
        )
        committed = await self.commit_partition(partition, part.checkpoint, part.input_next)
        if committed is None:
            return
        failpoints.reach("stateful-after-commit")
        # the partition's commit marker follows its last record (nobody else writes it)
        last = committed.last_offsets[(self.changelog_topic, partition)]
        part.committed(staged, last + 2)
        failpoints.reach("stateful-before-postgres")
        self.sink.add(partition, staged.changes, batch)

    async def reopen(self, partition: int) -> None:
        """After a failed commit (the local store kept) or a fence (closed already)."""
        part = self.parts.pop(partition, None)
        await self._open(partition, local=None if part is None else part.local)

    async def give_up(self, partition: int) -> None:
        await self._close(partition)  # its state is left to the new owner
