"""The source clock travels as committed-offset metadata."""

from app.source.marks import clock_metadata, stream_time_of
from tables.watermark import NO_TIME


def test_the_clock_round_trips_through_offset_metadata():
    assert stream_time_of(clock_metadata(1_800_000_000_123)) == 1_800_000_000_123


def test_missing_or_foreign_metadata_means_no_clock():
    assert stream_time_of("") == NO_TIME
    assert stream_time_of(None) == NO_TIME
    assert stream_time_of("written by another tool") == NO_TIME
    assert stream_time_of('{"other": 1}') == NO_TIME
