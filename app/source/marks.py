"""What a source partition's commit carries besides its records: the watermark mark it
sends to every user-keyed partition, and the source clock as offset metadata (so a
worker that takes the partition over judges lateness exactly as its previous owner)."""

from __future__ import annotations

import time

import orjson
from aiokafka import TopicPartition

from app.source.reader import PartitionReader
from app.wire import WatermarkMark, encode_mark
from tables.watermark import NO_TIME

MARK_HEARTBEAT_S = 1.0


def clock_metadata(stream_time: int) -> str:
    """The committed offset's metadata: the source clock there."""
    return orjson.dumps({"stream_time": stream_time}).decode()


def stream_time_of(metadata: str | None) -> int:
    try:
        return int(orjson.loads(metadata)["stream_time"]) if metadata else NO_TIME
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return NO_TIME


class Marks:
    """Decides when a source partition's watermark mark is due: when it moved, when the
    partition became idle or busy again, and at least once a second."""

    def __init__(self, topic: str, idle_advance_ms: int, consumer) -> None:
        self.topic = topic
        self.idle_advance_s = idle_advance_ms / 1000
        self.consumer = consumer
        self._sent: dict[int, tuple[int, bool, float]] = {}

    def forget(self, partition: int) -> None:
        """The partition was (re)positioned: its next commit sends a mark again."""
        self._sent.pop(partition, None)

    def due(self, partition: int, reader: PartitionReader) -> bytes | None:
        consumer = self.consumer
        now = time.monotonic()
        end = consumer.highwater(TopicPartition(self.topic, partition))
        at_end = end is not None and reader.next_offset >= end
        idle = at_end and now - reader.last_record_wall >= self.idle_advance_s
        watermark = reader.clock.watermark
        sent = self._sent.get(partition)
        if sent is not None and sent[:2] == (watermark, idle) and now - sent[2] < MARK_HEARTBEAT_S:
            return None
        self._sent[partition] = (watermark, idle, now)
        sources = len(consumer.partitions_for_topic(self.topic) or ()) or partition + 1
        return encode_mark(WatermarkMark(partition, sources, watermark, idle))
