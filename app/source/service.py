"""The source stage: a batch loop over `user_activity` that owns its consumer.

The worker starts it with the Faust app. It reads with aiokafka `getmany` in its own
consumer group, turns each partition's batch into outputs in one synchronous pass
(app/source/reader.py) and writes them in that partition's Kafka transaction. The
lake gets the same rows and flushes on its own schedule (app/source/lake_flusher.py).

The commit protocol is `Checkpoints.commit` (app/source/commit.py); read it first.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from mode import Service

from app import failpoints
from app.settings import Settings
from app.source import clients
from app.source.commit import Checkpoints, stream_time_of
from app.source.lake_flusher import LakeFlusher
from app.source.outputs import OutputWriter
from app.source.partitioner import KeyPartitioner
from app.source.reader import BatchReader, PartitionReader
from app.source.transaction import Fenced, PartitionTransaction
from app.source.verification import VerificationRetries
from app.stats import Stats
from tables.watermark import NO_TIME, SourceClock

log = logging.getLogger(__name__)
MAX_RECORDS = 20_000


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stage: SourceStage) -> None:
        self.stage = stage

    async def on_partitions_revoked(self, revoked) -> None:
        await self.stage.revoke({tp.partition for tp in revoked})

    async def on_partitions_assigned(self, assigned) -> None:
        await self.stage.assign({tp.partition for tp in assigned})


class SourceStage(Service):
    def __init__(self, settings: Settings, stats: Stats, lake, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.stats = stats
        self.topic = settings.input_topic
        self.group_id = f"{settings.app_id}-source"
        self.readers: dict[int, PartitionReader] = {}
        self.transactions: dict[int, PartitionTransaction] = {}
        self.checkpoints: Checkpoints | None = None
        self.fenced: set[int] = set()
        self.lake = LakeFlusher(lake, settings, stats)
        self.consumer: AIOKafkaConsumer | None = None
        self.admin: AIOKafkaAdminClient | None = None
        self.batch_reader: BatchReader | None = None
        self._lock = asyncio.Lock()
        self._generation = 0  # bumped by every assignment change and re-positioning
        self._last_commit = time.monotonic()
        self.outputs: OutputWriter | None = None
        self.verification_retries = VerificationRetries().install()
        self.aborts = 0
        self.refused_by_fence = 0  # commits refused: another worker owns the partition

    # -- lifecycle -----------------------------------------------------------

    async def on_start(self) -> None:
        settings = self.settings
        self.admin = AIOKafkaAdminClient(**clients.client_options(settings))
        await self.admin.start()
        await clients.declare_outputs(self.admin, settings)
        self.consumer = AIOKafkaConsumer(**clients.consumer_options(settings, self.group_id))
        await self.consumer.start()
        self.checkpoints = Checkpoints(settings, self.stats, self.consumer)
        enriched = await clients.partition_count(self.admin, settings.enriched_topic)
        self.batch_reader = BatchReader(
            settings.max_future_ms,
            KeyPartitioner(enriched),
            KeyPartitioner(settings.partitions),
            self.lake.rows,
        )
        self.outputs = OutputWriter(
            settings,
            self.stats,
            await clients.partition_count(self.admin, settings.dlq_topic),
            self.transactions,
        )
        self.consumer.subscribe([self.topic], listener=_Rebalance(self))
        self.add_future(self._run())

    async def on_stop(self) -> None:
        """SIGTERM: commit what was read, flush the lake, leave the group."""
        async with self._lock:
            try:
                await self._commit_all()
            except Exception as exc:  # the next owner reads it again
                log.warning("source: final commit failed: %s", exc)
        await self.lake.stop(self.readers)
        if self.consumer is not None:
            await self.consumer.stop()
        for txn in self.transactions.values():
            await txn.stop()
        if self.admin is not None:
            await self.admin.close()

    # -- partitions ----------------------------------------------------------

    async def assign(self, partitions: set[int]) -> None:
        async with self._lock:
            new = sorted(partitions - set(self.readers))
            if not new:
                return
            for partition in new:
                self.transactions[partition] = await self._transaction(partition)
                self.fenced.discard(partition)
            # only now, with every previous owner fenced, is the committed offset final
            tps = [TopicPartition(self.topic, p) for p in new]
            committed = await self.admin.list_consumer_group_offsets(self.group_id, partitions=tps)
            beginning = await self.consumer.beginning_offsets(tps)
            lake_positions = await self.lake.positions(new)
            for tp in tps:
                mark = committed.get(tp)
                if mark is not None and mark.offset >= 0:
                    kafka = (mark.offset, stream_time_of(mark.metadata))
                else:
                    kafka = (beginning[tp], NO_TIME)
                self.checkpoints.committed[tp.partition] = kafka
                self._position(tp.partition, kafka, lake_positions[tp.partition])
                self.lake.repositioned(tp.partition)

    def _position(self, partition: int, kafka: tuple[int, int], lake: tuple[int, int]) -> None:
        """Read `partition` from the lower of the two sinks' positions, with its clock."""
        start, stream_time = min(kafka, lake, key=lambda position: position[0])
        clock = SourceClock(self.settings.lateness_ms, stream_time)
        self.readers[partition] = PartitionReader(partition, clock, start, kafka[0], lake[0])
        self._generation += 1
        self.consumer.seek(TopicPartition(self.topic, partition), start)
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
                await self._commit_all(only=partitions)
            except Exception as exc:
                log.warning("source: commit before giving up %s failed: %s", partitions, exc)
            await self.lake.release(partitions, self.readers)
            for partition in partitions:
                self._forget(partition)
                txn = self.transactions.pop(partition, None)
                if txn is not None:
                    await txn.stop()

    def _forget(self, partition: int) -> None:
        self.readers.pop(partition, None)
        self.checkpoints.forget(partition)

    # -- the loop ------------------------------------------------------------

    async def _run(self) -> None:
        interval = self.settings.commit_interval_ms / 1000
        consumer = self.consumer
        while not self.should_stop:
            await self.lake.wait_for_room()
            generation = self._generation
            # wait for records no longer than until the next commit is due
            due_in = interval - (time.monotonic() - self._last_commit)
            batches = await consumer.getmany(
                timeout_ms=max(0, int(due_in * 1000)), max_records=MAX_RECORDS
            )
            async with self._lock:
                if generation != self._generation:
                    self._read_again(batches)
                    continue
                await self._handle(batches)
                if time.monotonic() - self._last_commit >= interval:
                    await self._commit_all()
                for partition, position in self.lake.take_moved().items():
                    self.lake_moved(partition, position)
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

    async def _handle(self, batches) -> None:
        now_ms = int(time.time() * 1000)
        read = self.batch_reader.read
        for tp, records in batches.items():
            reader = self.readers.get(tp.partition)
            if reader is None or tp.partition in self.fenced:
                continue
            out = read(reader, records, now_ms)
            self.stats.on_batch(tp.partition, out.events, out.late, reader.clock)
            if out:
                await self.outputs.write(tp.partition, out, self.transactions[tp.partition])
                failpoints.reach("mid-batch")

    # -- committing ----------------------------------------------------------

    async def _commit_all(self, only: set[int] | None = None) -> None:
        self._last_commit = time.monotonic()
        partitions = [p for p in self.readers if p not in self.fenced]
        if only is not None:
            partitions = [p for p in partitions if p in only]
        await asyncio.gather(*(self._commit_or_rewind(p) for p in partitions))

    async def _commit_or_rewind(self, partition: int) -> None:
        txn = self.transactions[partition]
        records, started = txn.records, time.monotonic()
        try:
            await self.checkpoints.commit(partition, self.readers[partition], txn)
            if records and not txn.records:
                self.outputs.health.succeeded(records, time.monotonic() - started)
        except Fenced as exc:
            log.warning("source: %s; stopped reading partition %d", exc, partition)
            self.fenced.add(partition)
            self.refused_by_fence += 1
            self.consumer.pause(TopicPartition(self.topic, partition))
        except KafkaError as exc:
            self.aborts += 1
            self.outputs.health.failed(f"{type(exc).__name__}: {exc}")
            log.warning(
                "source: commit of partition %d failed (%s); aborted, reading again from offset %d",
                partition,
                exc,
                self.checkpoints.committed[partition][0],
            )
            await self._rewind(partition)

    async def _rewind(self, partition: int) -> None:
        txn = self.transactions[partition]
        try:
            await txn.abort()
        except Exception:  # the producer is unusable: a new one with the same id
            await txn.stop()
            self.transactions[partition] = await self._transaction(partition)
        reader = self.readers[partition]
        # the lake buffer keeps what it has; only the Kafka outputs are read again
        kafka = self.checkpoints.committed[partition]
        self._position(partition, kafka, (reader.lake_from, NO_TIME))
        self.checkpoints.resend_mark(partition)

    async def _transaction(self, partition: int) -> PartitionTransaction:
        return await clients.start_transaction(
            self.settings, self.group_id, partition, self.outputs.health.failed
        )

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
