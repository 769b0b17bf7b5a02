"""The source stage's commit protocol: `Checkpoints.commit`. Read it first.

A committed offset carries the source clock at that offset as its metadata, so a
worker that takes a partition over judges lateness exactly as its previous owner.
"""

from __future__ import annotations

import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from app.settings import Settings
from app.source.reader import PartitionReader
from app.source.transaction import PartitionTransaction
from app.stats import Stats
from app.wire import WatermarkMark, encode_mark
from tables.watermark import NO_TIME

MARK_HEARTBEAT_S = 1.0


def checkpoint_metadata(stream_time: int) -> str:
    """What a committed offset carries besides itself: the source clock there."""
    return orjson.dumps({"stream_time": stream_time}).decode()


def stream_time_of(metadata: str | None) -> int:
    try:
        return int(orjson.loads(metadata)["stream_time"]) if metadata else NO_TIME
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return NO_TIME


class Checkpoints:
    """What each source partition last committed, and how it commits the next."""

    def __init__(self, settings: Settings, stats: Stats, consumer: AIOKafkaConsumer) -> None:
        self.settings = settings
        self.stats = stats
        self.consumer = consumer
        # partition -> (next offset, stream time) as of its last committed transaction
        self.committed: dict[int, tuple[int, int]] = {}
        self._marks_sent: dict[int, tuple[int, bool, float]] = {}
        self.commits = 0

    def forget(self, partition: int) -> None:
        self.committed.pop(partition, None)
        self._marks_sent.pop(partition, None)

    def resend_mark(self, partition: int) -> None:
        self._marks_sent.pop(partition, None)

    async def commit(
        self, partition: int, reader: PartitionReader, txn: PartitionTransaction
    ) -> None:
        """Make one source partition's progress durable, all or nothing.

        In this order, inside the partition's open Kafka transaction:
        1. its watermark mark goes to every user-keyed partition, after the events it
           covers (the same producer, so in order), when it moved or once a second;
        2. every open batch is sent: enriched records, dead letters, forwards, marks;
        3. the next offset to read, with the source clock there as its metadata, is
           added to the transaction (`send_offsets_to_transaction`);
        4. the transaction commits: a read_committed consumer sees all of it or none.
        Below the committed offset (a partition read again for the lake only) there
        is nothing to commit: the committed offset never moves back. If the commit
        fails, the caller aborts and reads the partition again from the committed
        offset with the clock stored there, which gives every record the same
        verdict; if another worker has taken the partition over, it fails as Fenced
        and nothing of it is visible. The lake is not part of this: it commits on its
        own schedule (lake_flusher.py), and a new owner reads from the lower of the
        two positions (reader.py).
        """
        committed_offset = self.committed[partition][0]
        if reader.next_offset < committed_offset:
            return
        mark = self._mark(partition, reader)
        if mark is not None:
            internal = self.settings.internal_topic
            for target in range(self.settings.partitions):
                await txn.add(internal, target, [(None, mark)])
        if not txn.pending and committed_offset == reader.next_offset:
            return
        stream_time = reader.clock.stream_time
        await txn.commit(reader.next_offset, checkpoint_metadata(stream_time))
        self.committed[partition] = (reader.next_offset, stream_time)
        self.commits += 1
        now_ms = time.time() * 1000
        self.stats.latency.observe_ms(now_ms - t for t in reader.pending_timestamps)
        reader.pending_timestamps = []

    def _mark(self, partition: int, reader: PartitionReader) -> bytes | None:
        """The partition's watermark mark, if it moved or a heartbeat is due."""
        consumer = self.consumer
        topic = self.settings.input_topic
        now = time.monotonic()
        end = consumer.highwater(TopicPartition(topic, partition))
        at_end = end is not None and reader.next_offset >= end
        idle = at_end and now - reader.last_record_wall >= self.settings.idle_advance_ms / 1000
        watermark = reader.clock.watermark
        sent = self._marks_sent.get(partition)
        if sent is not None and sent[:2] == (watermark, idle) and now - sent[2] < MARK_HEARTBEAT_S:
            return None
        self._marks_sent[partition] = (watermark, idle, now)
        sources = len(consumer.partitions_for_topic(topic) or ()) or partition + 1
        return encode_mark(WatermarkMark(partition, sources, watermark, idle))
