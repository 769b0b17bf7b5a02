"""One source partition's Kafka outputs, written in transactions with its offset.

Each source partition has its own transactional producer, with a transactional id
made of the app id, the input topic and the partition. A worker that takes the
partition over starts a producer with the same id, which fences the previous
owner: its open transaction is aborted, and a later commit of it fails
(ProducerFenced) without writing anything. (aiokafka does not send the consumer
group generation with offsets, so fencing per member (KIP-447) is not available.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata

from app import failpoints
from app.errors import PipelineError

Headers = list[tuple[str, bytes]]


class Fenced(PipelineError):
    """Another worker now owns this source partition; nothing of ours was committed."""


class PartitionTransaction:
    def __init__(self, producer: AIOKafkaProducer, source: TopicPartition, group_id: str) -> None:
        self.producer = producer
        self.source = source
        self.group_id = group_id
        self._batches: dict[tuple[str, int], object] = {}
        self.records = 0  # added since the last commit or abort
        self._open = False

    @classmethod
    async def start(
        cls, source: TopicPartition, group_id: str, transactional_id: str, **options
    ) -> PartitionTransaction:
        producer = AIOKafkaProducer(transactional_id=transactional_id, **options)
        # init_transactions: fences the partition's previous owner, aborting its open
        # transaction, before this worker reads the committed offset
        try:
            await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        return cls(producer, source, group_id)

    async def stop(self) -> None:
        # a fenced or broken producer: nothing of it is needed any more
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.producer.stop(), 10)

    @property
    def pending(self) -> bool:
        return self.records > 0

    async def _begin(self) -> None:
        if not self._open:
            await self.producer.begin_transaction()
            self._open = True

    async def add(
        self, topic: str, partition: int, records: Sequence[tuple], headers: bool = False
    ) -> None:
        """Append (key, value) or (key, value, headers) records to one topic partition."""
        await self._begin()
        self.records += len(records)
        slot = (topic, partition)
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = self.producer.create_batch()
        for record in records:
            key, value = record[0], record[1]
            extra = record[2] if headers else []
            if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:
                await self._send(batch, topic, partition)
                batch = self._batches[slot] = self.producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=extra)

    async def _send(self, batch, topic: str, partition: int) -> None:
        delivered = await self.producer.send_batch(batch, topic, partition=partition)
        # a failed delivery fails the commit, which is where it is handled
        delivered.add_done_callback(_consume_exception)

    async def commit(self, next_offset: int, metadata: str) -> None:
        """Send what is open, add the partition's next offset, commit: all or nothing.

        Raises Fenced when another worker has taken the partition over; any other
        error leaves the transaction to `abort`.
        """
        await self._begin()
        try:
            batches, self._batches = self._batches, {}
            for (topic, partition), batch in batches.items():
                if batch.record_count():
                    await self._send(batch, topic, partition)
            failpoints.reach("after-sends")
            offsets = {self.source: OffsetAndMetadata(next_offset, metadata)}
            await self.producer.send_offsets_to_transaction(offsets, self.group_id)
            await self.producer.commit_transaction()
        except ProducerFenced as exc:
            raise Fenced(f"{self.source} is owned by another worker now") from exc
        self._open = False
        self.records = 0

    async def abort(self) -> None:
        """Drop what is open (the caller reads it again from the committed offset)."""
        self._batches = {}
        self.records = 0
        if self._open:
            self._open = False
            try:
                await asyncio.wait_for(self.producer.abort_transaction(), 30)
            except ProducerFenced as exc:
                raise Fenced(f"{self.source} is owned by another worker now") from exc


def _consume_exception(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()
