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

import logging

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
from app.source.marks import Marks, stream_time_of
from app.source.outputs import OutputWriter
from app.source.partition import SourcePartition, SourceWiring
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
        self.lake = LakeFlusher(lake, settings, stats, self.outages)
        self.admin = None
        self.marks: Marks | None = None
        self.batch_reader: BatchReader | None = None
        self.outputs: OutputWriter | None = None
        self.sinks: list = []  # where each partition's records go; read from the lowest
        self.wiring: SourceWiring | None = None
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
            self.tasks,
            self.kafka_positions,
            self.limits,
        )
        self.sinks = [self.outputs, self.lake]
        self.wiring = SourceWiring(
            settings, self.stats, self.batch_reader, self.outputs, self.marks
        )
        self.consumer.subscribe([self.topic], listener=self.listener())
        self.start_loop()

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

    async def release_sinks(self) -> None:
        await self.lake.stop(self.readers(), self.left_s(0.5))

    def closers(self) -> list:
        return [] if self.admin is None else [self.admin.close]

    def readers(self) -> dict[int, PartitionReader]:
        return {partition: task.reader for partition, task in self.tasks.items()}

    # -- partitions ----------------------------------------------------------

    async def open_tasks(self, partitions: list[int], previous: dict) -> None:
        """Fence each partition's previous owner, then read where each sink stands and
        read the partition from the lowest of them. `previous`: a reopened partition's
        task, whose lake buffer stands where it read to (it keeps what it buffered)."""
        self.unopened.update(partitions)  # until they are open: the supervisor tries again
        checkpoints: dict[int, PartitionCheckpoint] = {}
        try:  # together, as one opening: every producer fenced before any position read
            for partition in partitions:
                checkpoints[partition] = await PartitionCheckpoint.open(
                    self.clients.producer,
                    f"{self.settings.app_id}-{self.topic}-{partition}",
                    TopicPartition(self.topic, partition),
                    self.group_id,
                    on_error=self.kafka_failed,
                )
            # only now, with every previous owner fenced, are the positions final
            positions = {sink.name: await sink.positions(partitions) for sink in self.sinks}
        except BaseException:
            for checkpoint in checkpoints.values():
                await checkpoint.close_shielded()
            raise
        for partition in partitions:
            stands = {name: found[partition] for name, found in positions.items()}
            task = previous.get(partition)
            buffered = None if task is None else task.reader.lake_from
            if buffered is not None and buffered >= stands["kafka"][0]:
                stands["lake"] = (buffered, NO_TIME)  # never the lower one: read from Kafka's
            else:
                self.lake.repositioned(partition)
            self._position(partition, checkpoints[partition], stands, stands["kafka"])

    async def kafka_positions(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """Where the Kafka outputs stand: each partition's committed offset with the
        clock stored beside it, or the topic's beginning."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        # stable: none still pending from a transaction (KIP-447's require_stable)
        committed = await self.retry(lambda: committed_offsets(self.admin, self.group_id, tps))
        beginning = await self.retry(lambda: self.consumer.beginning_offsets(tps))
        return {
            tp.partition: (beginning[tp], NO_TIME)
            if committed[tp] is None
            else (committed[tp].offset, stream_time_of(committed[tp].metadata))
            for tp in tps
        }

    def kafka_failed(self, exc: BaseException) -> None:
        self.outputs.health.failed(f"{type(exc).__name__}: {exc}")
        super().kafka_failed(exc)

    def _position(
        self,
        partition: int,
        checkpoint: PartitionCheckpoint,
        stands: dict[str, tuple[int, int]],
        committed_at: tuple[int, int],
    ) -> None:
        """Open `partition`'s task, read from the lowest of its sinks' positions."""
        reader = self._reader(partition, stands)
        self.opened(SourcePartition(partition, reader, checkpoint, committed_at, self.wiring))
        failpoints.reach("recovering")

    def _reader(self, partition: int, stands: dict[str, tuple[int, int]]) -> PartitionReader:
        """A reader from the lowest of the sinks' positions, with the clock kept there."""
        start, stream_time = min(stands.values(), key=lambda position: position[0])
        clock = SourceClock(self.settings.lateness_ms, stream_time)
        kafka, lake = stands["kafka"][0], stands["lake"][0]
        self.marks.forget(partition)
        log.info(
            "source: partition %d from offset %d (Kafka outputs from %d, lake from %d)",
            partition,
            start,
            kafka,
            lake,
        )
        return PartitionReader(partition, clock, start, kafka, lake)

    # -- the loop's turn -------------------------------------------------------

    async def before_fetch(self) -> None:
        await self.lake.wait_for_room()

    def after_commit_turn(self) -> None:
        for partition, position in self.lake.take_moved().items():
            self.lake_moved(partition, position)

    def after_turn(self) -> None:
        readers = self.readers()
        self.lake.maybe_flush(readers)
        self.lake.maybe_maintain(readers)

    async def revoked(self, partitions: set[int]) -> None:
        await self.lake.release(partitions, self.readers())

    def abandoned(self, partitions: set[int]) -> None:
        self.lake.rows.drop(partitions)  # read again from the table's position

    def lake_moved(self, partition: int, lake: tuple[int, int]) -> None:
        """The lake table holds `partition` up to another point than this worker thought
        (another writer got there first): read from there for the lake only."""
        task = self.tasks.get(partition)
        if task is None:
            return
        self.lake.rows.drop({partition})
        kafka = (task.reader.next_offset, task.reader.clock.stream_time)
        # the same task, its checkpoint and its state (fenced, say) kept: a new reader
        task.reader = self._reader(partition, {"kafka": kafka, "lake": lake})
        self._generation += 1
        self.consumer.seek(TopicPartition(self.topic, partition), task.read_next)
        self.lake.repositioned(partition)
