"""What a source partition's commit carries besides its records: the watermark mark it
sends to every user-keyed partition, and the source clock as offset metadata (so a
worker that takes the partition over judges lateness exactly as its previous owner)."""

from __future__ import annotations

import time

import orjson
from aiokafka import TopicPartition

from app.source.reader import PartitionReader
from app.wire import WatermarkMark, encode_mark
from tables.watermark import IDLE_LEASE_S, NO_TIME


def clock_metadata(stream_time: int) -> str:
    """The committed offset's metadata: the source clock there."""
    return orjson.dumps({"stream_time": stream_time}).decode()


def stream_time_of(metadata: str | None) -> int:
    try:
        return int(orjson.loads(metadata)["stream_time"]) if metadata else NO_TIME
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return NO_TIME


# A mark that says nothing new is sent again this often: within the stateful stage's
# lease on an idle claim, and a stateful partition rebuilt from the user-keyed topic
# alone (a new state format) whose retention dropped an idle source's last mark hears
# from that source again within this time.
MARK_REPEAT_S = IDLE_LEASE_S / 2


class Marks:
    """Decides when a source partition's watermark mark is due: when it moved, when the
    partition became idle or busy again, after the partition was (re)positioned, and
    once a minute regardless.

    A mark that says what the last one said changes nothing downstream (the stateful
    stage keeps each source's last mark in its state, and moves time on by the wall
    clock itself while every source is idle). Repeated once a second, as before, they
    cost four transactions a second per stage while nothing happened, and most of a
    waiting worker's CPU (docs/performance.md, Outages)."""

    def __init__(self, topic: str, idle_advance_ms: int, consumer, clock=time.monotonic) -> None:
        self.topic = topic
        self.idle_advance_s = idle_advance_ms / 1000
        self.consumer = consumer
        self._clock = clock
        self._sent: dict[int, tuple[tuple[int, bool], float]] = {}  # mark, when

    def forget(self, partition: int) -> None:
        """The partition was (re)positioned: its next commit sends a mark again."""
        self._sent.pop(partition, None)

    def due(self, partition: int, reader: PartitionReader) -> bytes | None:
        consumer, now = self.consumer, self._clock()
        end = consumer.highwater(TopicPartition(self.topic, partition))
        at_end = end is not None and reader.next_offset >= end
        idle = at_end and now - reader.last_record_wall >= self.idle_advance_s
        mark = (reader.clock.watermark, idle)
        sent = self._sent.get(partition)
        if sent is not None and sent[0] == mark and now - sent[1] < MARK_REPEAT_S:
            return None
        self._sent[partition] = (mark, now)
        sources = len(consumer.partitions_for_topic(self.topic) or ()) or partition + 1
        return encode_mark(WatermarkMark(partition, sources, mark[0], idle))
