"""The source clock travels as committed-offset metadata; watermark marks go when they
say something new."""

from aiokafka import TopicPartition

from app.source.marks import Marks, clock_metadata, stream_time_of
from app.source.reader import PartitionReader
from app.wire import WatermarkMark, decode
from tables.watermark import NO_TIME, SourceClock


def test_the_clock_round_trips_through_offset_metadata():
    assert stream_time_of(clock_metadata(1_800_000_000_123)) == 1_800_000_000_123


def test_missing_or_foreign_metadata_means_no_clock():
    assert stream_time_of("") == NO_TIME
    assert stream_time_of(None) == NO_TIME
    assert stream_time_of("written by another tool") == NO_TIME
    assert stream_time_of('{"other": 1}') == NO_TIME


class Consumer:
    """What Marks asks the source stage's consumer: the end of a partition, and how
    many partitions the topic has."""

    def __init__(self, end: int) -> None:
        self.end = end

    def highwater(self, tp: TopicPartition) -> int:
        return self.end

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}


def test_a_mark_goes_when_it_says_something_new_and_once_a_minute_otherwise():
    now = [100.0]
    marks = Marks("input", idle_advance_ms=30_000, consumer=Consumer(end=10), clock=lambda: now[0])
    reader = PartitionReader(
        0, SourceClock(lateness_ms=0), next_offset=5, kafka_from=0, lake_from=0,
        last_record_wall=now[0],
    )  # fmt: skip
    reader.clock.observe(1_000)
    assert decode(marks.due(0, reader)) == WatermarkMark(0, 2, 1_000, False)
    now[0] += 59.0
    assert marks.due(0, reader) is None  # nothing new
    now[0] += 1.0
    assert decode(marks.due(0, reader)) == WatermarkMark(0, 2, 1_000, False)  # a minute on

    reader.clock.observe(2_000)
    assert decode(marks.due(0, reader)) == WatermarkMark(0, 2, 2_000, False)

    reader.next_offset, reader.last_record_wall = 10, now[0] - 31
    assert decode(marks.due(0, reader)) == WatermarkMark(0, 2, 2_000, True)  # idle now
    assert marks.due(0, reader) is None

    marks.forget(0)  # re-positioned: said again
    assert decode(marks.due(0, reader)) == WatermarkMark(0, 2, 2_000, True)
