"""The source stage: a batch loop over `user_activity` that owns its consumer.

The worker starts it with the Faust app. It reads with aiokafka `getmany` in its own
consumer group, turns each partition's batch into outputs in one synchronous pass
(app/source/reader.py) and adds them to that partition's checkpoint, which commits
them with the partition's offset every COMMIT_INTERVAL (app/commit/checkpoint.py,
the commit protocol of both stages). The lake gets the same rows and flushes on its
own schedule (app/source/lake_flusher.py).

A partition is opened the same way whether it was just assigned or its commit failed:
its checkpoint is opened first (fencing any previous owner), then its committed
offset and clock are read from the broker and its lake position from the table.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from app import failpoints
from app.commit.checkpoint import PartitionCheckpoint
from app.commit.stage import BatchStage
from app.errors import CommitFailed
from app.kafka_clients import (
    KafkaClients,
    committed_offsets,
    create_topics,
    partition_count,
    topic_limits,
)
from app.limits import RecordLimits
from app.settings import Settings
from app.source.lake_flusher import LakeFlusher
from app.source.marks import Marks, clock_metadata, stream_time_of
from app.source.outputs import OutputWriter
from app.source.partitioner import KeyPartitioner
from app.source.reader import BatchReader, PartitionReader
from app.source.verification import VerificationRetries
from app.stats import Stats
from tables.watermark import NO_TIME, SourceClock

log = logging.getLogger(__name__)


class SourceStage(BatchStage):
    name = "source"

    def __init__(
        self, settings: Settings, stats: Stats, lake, clients: KafkaClients | None = None, **kw
    ) -> None:
        super().__init__(settings.commit_interval_ms, stuck_after_ms=settings.stuck_after_ms, **kw)
        self.settings = settings
        self.stats = stats
        self.clients = clients or KafkaClients(settings)
        self.topic = settings.input_topic
        self.group_id = f"{settings.app_id}-source"
        self.readers: dict[int, PartitionReader] = {}
        self.checkpoints: dict[int, PartitionCheckpoint] = {}
        # partition -> (next offset, stream time) as of its last commit
        self.committed: dict[int, tuple[int, int]] = {}
        self.lake = LakeFlusher(lake, settings, stats, self.outages)
        self.admin = None
        self.marks: Marks | None = None
        self.batch_reader: BatchReader | None = None
        self.outputs: OutputWriter | None = None
        self.limits = RecordLimits.kafka_defaults()
        self.verification_retries = VerificationRetries().install()

    # -- lifecycle -----------------------------------------------------------

    async def on_start(self) -> None:
        settings = self.settings
        self.admin = self.clients.admin()
        await self.admin.start()
        await create_topics(
            self.admin,
            [
                NewTopic(name, settings.partitions, settings.replication_factor)
                for name in (settings.enriched_topic, settings.dlq_topic, settings.internal_topic)
            ],
        )
        self.consumer = self.clients.consumer(self.group_id)
        await self.consumer.start()
        self.marks = Marks(self.topic, settings.idle_advance_ms, self.consumer)
        await self.read_limits()
        enriched = await partition_count(self.admin, settings.enriched_topic)
        self.batch_reader = BatchReader(
            settings.max_future_ms,
            KeyPartitioner(enriched),
            KeyPartitioner(settings.partitions),
            self.lake.rows,
            self.limits,
            settings.max_future_from_ms,
        )
        self.outputs = OutputWriter(
            settings,
            self.stats,
            await partition_count(self.admin, settings.dlq_topic),
            self.checkpoints,
            self.limits,
        )
        self.consumer.subscribe([self.topic], listener=self.listener())
        self.loop_task = asyncio.ensure_future(self.run_loop())

    async def read_limits(self) -> None:
        """The largest records the output topics take, from the broker (docs/contract.md,
        Limits): a valid record's outputs must fit them."""
        settings = self.settings
        topics = [settings.enriched_topic, settings.dlq_topic, settings.internal_topic]
        found = await self.retry(lambda: topic_limits(self.admin, topics))
        self.limits = RecordLimits.from_topics(found, *topics)
        self.clients.max_batch_bytes = min(self.clients.max_batch_bytes, self.limits.smallest)
        log.info(
            "source: the topics take records of up to (max.message.bytes) %s; a valid "
            "record's enriched record must fit in %d bytes, a dead letter is cut to %d",
            ", ".join(f"{t} {n:,}" for t, n in found.items()),
            self.limits.enriched,
            self.limits.dead_letter,
        )

    async def commit_failed(self, exc: CommitFailed) -> None:
        if exc.too_large:  # a data error: the records are judged again, not retried
            await self.refused_as_too_large(exc)
        else:
            self.kafka_failed(exc)  # the Kafka sink's health says so, once

    async def refused_as_too_large(self, exc: CommitFailed) -> None:
        """The broker refused a record that the limits let through (a topic's limit was
        lowered since they were read, say): read them again, smaller each time the
        broker's answer did not change them, so the partition, reopened, judges its
        records again and sets the one that does not fit aside (`too_large`)."""
        before = self.limits
        await self.read_limits()
        if self.limits.smallest >= before.smallest:
            self.limits = before.tightened()
        self.batch_reader.limits = self.outputs.limits = self.limits
        self.clients.max_batch_bytes = min(self.clients.max_batch_bytes, self.limits.smallest)
        self.stats.on_rejected("kafka", "commit_refused_too_large")
        log.warning(
            "source: %s: the broker refused a record as too large; records are judged "
            "again against %s and the one that does not fit is dead-lettered",
            exc,
            self.limits,
        )

    def uncommitted(self) -> dict[int, int]:
        return {
            p: reader.next_offset - self.committed[p][0]
            for p, reader in self.readers.items()
            if p in self.committed and reader.next_offset > self.committed[p][0]
        }

    async def release_sinks(self) -> None:
        await self.lake.stop(self.readers, self.left_s(0.5))

    def release_partitions(self) -> list:
        return list(self.checkpoints.values())

    def closers(self) -> list:
        return [] if self.admin is None else [self.admin.close]

    # -- partitions ----------------------------------------------------------

    async def assign(self, partitions: set[int]) -> None:
        async with self._lock:
            new = sorted(partitions - set(self.readers))
            if not new:
                return
            self.unopened.update(new)  # until open; each tried again alone if this fails
            try:  # together, as one opening: every producer fenced before any offset read
                await self._open(new)
            except Exception:  # each is tried again on its own by the supervisor
                log.exception("source: opening partitions %s failed; trying again", new)

    async def open_partition(self, partition: int) -> None:
        await self._open([partition])

    async def abandon_all(self) -> list[int]:
        """After an unexpected error: every partition given up as it stands, outputs not
        committed dropped with their checkpoint, the lake's buffered rows dropped (read
        again from the table's position when the partition opens again)."""
        partitions = sorted(p for p in self.readers if p not in self.fenced)
        self.lake.rows.drop(set(partitions))
        for partition in partitions:
            self.readers.pop(partition, None)
            self.committed.pop(partition, None)
            checkpoint = self.checkpoints.pop(partition, None)
            if checkpoint is not None:
                await checkpoint.close()
        self.progress.forget(partitions)
        self.unopened.update(partitions)
        return partitions

    async def _open(self, partitions: list[int], lake_from: dict[int, int] | None = None) -> None:
        """Fence each partition's previous owner, then read where it stands and position
        it there. `lake_from`: where the lake buffer already stands (a reopened
        partition keeps what it buffered), instead of the lake table's position."""
        self.unopened.update(partitions)  # until they are open: the supervisor tries again
        for partition in partitions:
            self.fenced.pop(partition, None)
            previous = self.checkpoints.pop(partition, None)
            if previous is not None:
                await previous.close()
            self.checkpoints[partition] = await PartitionCheckpoint.open(
                self.clients.producer,
                f"{self.settings.app_id}-{self.topic}-{partition}",
                TopicPartition(self.topic, partition),
                self.group_id,
                on_error=self.kafka_failed,
            )
        # only now, with every previous owner fenced, is the committed offset final
        tps = [TopicPartition(self.topic, p) for p in partitions]
        # stable: none still pending from a transaction (KIP-447's require_stable)
        committed = await self.retry(lambda: committed_offsets(self.admin, self.group_id, tps))
        beginning = await self.retry(lambda: self.consumer.beginning_offsets(tps))
        lake_positions = await self.lake.positions(partitions)
        for tp in tps:
            mark = committed[tp]
            if mark is not None:
                kafka = (mark.offset, stream_time_of(mark.metadata))
            else:
                kafka = (beginning[tp], NO_TIME)
            self.committed[tp.partition] = kafka
            lake = lake_positions[tp.partition]
            buffered = (lake_from or {}).get(tp.partition)
            if buffered is not None and buffered >= kafka[0]:
                lake = (buffered, NO_TIME)  # never the lower one: read from Kafka's
            else:
                self.lake.repositioned(tp.partition)
            self._position(tp.partition, kafka, lake)
            self.unopened.discard(tp.partition)

    def kafka_failed(self, exc: BaseException) -> None:
        self.outputs.health.failed(f"{type(exc).__name__}: {exc}")
        super().kafka_failed(exc)

    def _position(self, partition: int, kafka: tuple[int, int], lake: tuple[int, int]) -> None:
        """Read `partition` from the lower of the two sinks' positions, with its clock."""
        start, stream_time = min(kafka, lake, key=lambda position: position[0])
        clock = SourceClock(self.settings.lateness_ms, stream_time)
        self.readers[partition] = PartitionReader(partition, clock, start, kafka[0], lake[0])
        self.marks.forget(partition)
        self._generation += 1
        tp = TopicPartition(self.topic, partition)
        self.consumer.seek(tp, start)
        self.consumer.resume(tp)
        failpoints.reach("recovering")
        log.info(
            "source: partition %d from offset %d (Kafka outputs from %d, lake from %d)",
            partition,
            start,
            kafka[0],
            lake[0],
        )

    async def revoke(self, partitions: set[int]) -> None:
        async with self._lock:
            self._generation += 1
            try:
                await self.commit_all(only=partitions)
            except Exception as exc:
                log.warning("source: commit before giving up %s failed: %s", partitions, exc)
            await self.lake.release(partitions, self.readers)
            self.unopened -= partitions
            self.progress.forget(partitions)
            for partition in partitions:
                self.readers.pop(partition, None)
                self.committed.pop(partition, None)
                self.fenced.pop(partition, None)
                checkpoint = self.checkpoints.pop(partition, None)
                if checkpoint is not None:
                    await checkpoint.close()

    # -- the loop ------------------------------------------------------------

    async def poll(self, commit: bool | None = None) -> None:
        """One turn of the loop: fetch, hand to the sinks, commit when due."""
        await self.lake.wait_for_room()
        generation, batches = await self.fetch()
        async with self._lock:
            if generation != self._generation:
                self._read_again(batches)
                return
            self._handle(batches)
            if self.commit_due(commit):
                await self.commit_all()
            await self.reopen_fenced()
            for partition, position in self.lake.take_moved().items():
                self.lake_moved(partition, position)
            self._watch_progress()
        self.lake.maybe_flush(self.readers)
        self.lake.maybe_maintain(self.readers)

    def _read_again(self, batches) -> None:
        """A batch fetched across a rebalance may start at a position that the new
        assignment moved (a partition is read from its lake position): drop it and
        read each partition again from where its reader stands."""
        for tp in batches:
            reader = self.readers.get(tp.partition)
            if reader is not None:
                self.consumer.seek(tp, reader.next_offset)

    def _handle(self, batches) -> None:
        now_ms = int(time.time() * 1000)
        read = self.batch_reader.read
        for tp, records in batches.items():
            reader = self.readers.get(tp.partition)
            if reader is None or tp.partition in self.fenced:
                continue
            out = read(reader, records, now_ms)
            self.stats.on_batch(tp.partition, out.events, out.late, reader.clock)
            if out:
                self.outputs.write(tp.partition, out, self.checkpoints[tp.partition])
                failpoints.reach("mid-batch")

    def _watch_progress(self) -> None:
        for partition, reader in self.readers.items():
            committed = self.committed.get(partition, (reader.next_offset, 0))[0]
            # reading again for the lake alone moves lake_from, not the commits
            progress = max(committed, reader.lake_from)
            self.watch(partition, progress, committed, reader.next_offset)

    # -- committing ----------------------------------------------------------

    async def commit_all(self, only: set[int] | None = None) -> None:
        self._last_commit = time.monotonic()
        partitions = [p for p in self.readers if p not in self.fenced]
        if only is not None:
            partitions = [p for p in partitions if p in only]
        await asyncio.gather(*(self._commit(p) for p in partitions))

    async def _commit(self, partition: int) -> None:
        """Commit one partition's checkpoint; reopen it if that fails."""
        checkpoint, reader = self.checkpoints[partition], self.readers[partition]
        if checkpoint.closed:  # its last commit was cut short: the next owner reads it
            return
        committed_offset = self.committed[partition][0]
        # Read again for the lake only (after a lake fence): the checkpoint holds outputs
        # up to kafka_from, so a commit at a lower offset would claim fewer records than
        # it makes visible; and the committed offset never moves back.
        if reader.next_offset < max(committed_offset, reader.kafka_from):
            return
        mark = self.marks.due(partition, reader)
        if mark is not None:
            for target in range(self.settings.partitions):
                checkpoint.add(self.settings.internal_topic, target, [(None, mark)])
        if not checkpoint.pending and committed_offset == reader.next_offset:
            return
        records, started = checkpoint.records, time.monotonic()
        stream_time = reader.clock.stream_time
        committed = await self.commit_partition(
            partition, checkpoint, reader.next_offset, clock_metadata(stream_time)
        )
        if committed is None:
            return
        self.committed[partition] = (reader.next_offset, stream_time)
        if records:
            self.outputs.health.succeeded(records, time.monotonic() - started)
        now_ms = time.time() * 1000
        self.stats.latency.observe_ms(now_ms - t for t in reader.pending_timestamps)
        reader.pending_timestamps = []

    async def reopen(self, partition: int) -> None:
        """After a failed or fenced commit: open the partition again and read it from its
        committed offset (the broker's, after the reopening fenced what was open). The
        lake buffer keeps what it has; only the Kafka outputs are read again."""
        reader = self.readers.pop(partition, None)
        lake_from = None if reader is None else {partition: reader.lake_from}
        await self._open([partition], lake_from=lake_from)

    def lake_moved(self, partition: int, lake: tuple[int, int]) -> None:
        """The lake table holds `partition` up to another point than this worker thought
        (another writer got there first): read from there for the lake only."""
        reader = self.readers.get(partition)
        if reader is None:
            return
        self.lake.rows.drop({partition})
        kafka = (reader.next_offset, reader.clock.stream_time)
        self._position(partition, kafka, lake)
        self.lake.repositioned(partition)
