"""The source stage's per-batch pass, without a broker: what each sink gets."""

from __future__ import annotations

import json
import tracemalloc
from typing import NamedTuple

import orjson

from app.limits import RecordLimits
from app.sinks.lake import LakeRows
from app.sinks.lake.rows import SEAL_ROWS
from app.source.partitioner import KeyPartitioner
from app.source.reader import BatchReader, PartitionReader
from tables.watermark import NO_TIME, SourceClock
from tests.unit.app.sinks.lake.support import columns

MIN = 60_000
T = 1_800_000_000_000


class Record(NamedTuple):
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = T


def event(t: int, user: str = "u1", kind: str = "page_view", **extra) -> bytes:
    return orjson.dumps(
        {"event_time": t, "user_id": user, "event_type": kind, "page_url": "/a", **extra}
    )


def reader(next_offset=0, kafka_from=0, lake_from=0, stream_time=NO_TIME) -> PartitionReader:
    return PartitionReader(2, SourceClock(2 * MIN, stream_time), next_offset, kafka_from, lake_from)


def batch_reader() -> tuple[BatchReader, LakeRows]:
    rows = LakeRows()
    return BatchReader(5 * MIN, KeyPartitioner(4), KeyPartitioner(4), rows), rows


def lake_offsets(rows: LakeRows) -> list[int]:
    return [o for b in rows.take().values() for o in columns(b)["kafka_offset"]]


def test_each_valid_record_goes_to_every_sink_once_and_late_ones_are_not_forwarded():
    read, rows = batch_reader()
    r = reader()
    records = [Record(0, event(T)), Record(1, event(T + 5 * MIN)), Record(2, event(T))]
    out = read.read(r, records, now_ms=T + 10 * MIN)
    enriched = [orjson.loads(v) for recs in out.enriched.values() for _, v in recs]
    assert sorted(e["kafka_offset"] for e in enriched) == [0, 1, 2]
    assert {e["kafka_offset"]: e["late"] for e in enriched} == {0: False, 1: False, 2: True}
    forwarded = [f for fs in out.forward.values() for f in fs]
    assert sorted(f[1] for f in forwarded) == [0, 1]
    assert (out.events, out.late) == (3, 1)
    assert lake_offsets(rows) == [0, 1, 2]
    assert r.next_offset == r.kafka_from == r.lake_from == 3


def test_a_bad_record_becomes_a_dead_letter_with_its_key_value_and_reason():
    read, rows = batch_reader()
    out = read.read(reader(), [Record(0, b"{oops", key=b"k")], now_ms=T)
    [dead] = out.dead_letters
    assert (dead.key, dead.value, dead.offset, dead.reason) == (b"k", b"{oops", 0, "invalid_json")
    assert not out.enriched and not out.forward and lake_offsets(rows) == []


def test_below_the_kafka_position_only_the_lake_is_filled_in_with_the_same_verdicts():
    # the lake stands at 0, the Kafka outputs at 2: offsets 0-1 go to the lake only
    read, rows = batch_reader()
    records = [Record(0, event(T + 5 * MIN)), Record(1, event(T)), Record(2, event(T))]
    r = reader(next_offset=0, kafka_from=2, lake_from=0)
    out = read.read(r, records, now_ms=T + 10 * MIN)
    enriched = [orjson.loads(v) for recs in out.enriched.values() for _, v in recs]
    assert [e["kafka_offset"] for e in enriched] == [2]
    assert enriched[0]["late"] is True  # judged against the clock offset 0 advanced
    taken = rows.take()
    assert columns(taken[2])["kafka_offset"] == [0, 1, 2]
    assert columns(taken[2])["late"] == [False, True, True]


def test_below_the_lake_position_only_the_kafka_outputs_are_written():
    read, rows = batch_reader()
    r = reader(next_offset=0, kafka_from=0, lake_from=2)
    out = read.read(r, [Record(o, event(T + o)) for o in range(3)], now_ms=T + MIN)
    assert out.events == 3
    assert lake_offsets(rows) == [2]


def test_records_delivered_again_after_a_seek_are_skipped():
    read, _ = batch_reader()
    r = reader()
    read.read(r, [Record(0, event(T)), Record(1, event(T))], now_ms=T)
    out = read.read(r, [Record(1, event(T)), Record(2, event(T))], now_ms=T)
    assert out.events == 1 and r.next_offset == 3


def test_offsets_missing_from_the_log_are_passed_over():
    # transaction markers and compaction leave gaps in a partition's offsets
    read, _ = batch_reader()
    r = reader()
    out = read.read(r, [Record(0, event(T)), Record(5, event(T))], now_ms=T)
    assert out.events == 2 and r.next_offset == 6


def test_the_kafka_timestamps_of_the_transaction_are_kept_for_the_latency():
    read, _ = batch_reader()
    r = reader(kafka_from=1)
    records = [Record(0, event(T), timestamp=10), Record(1, event(T), timestamp=20)]
    read.read(r, records, now_ms=T)
    assert r.pending_timestamps == [20]


def test_enriched_values_waiting_for_their_send_hold_their_length_not_a_json_buffer():
    # orjson >= 3.12 returns its 4-KB working buffer; a batch of 20k values held as such
    # until the send was 80 MB of a catch-up's peak RSS (bench --only memory)
    read, _ = batch_reader()
    records = [Record(i, event(T, user=f"u{i}")) for i in range(2_000)]
    tracemalloc.start()
    try:
        out = read.read(reader(), records, now_ms=T)
        values = [v for recs in out.enriched.values() for _, v in recs]
        with_values = tracemalloc.get_traced_memory()[0]
        out.enriched.clear()
        length, count = sum(map(len, values)), len(values)
        del values
        held = with_values - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert count == 2_000
    assert held < 2 * length, f"{held:,} bytes traced for {length:,} bytes of enriched values"


def test_a_read_batch_of_seal_rows_or_more_goes_to_the_lake_as_arrow_at_once():
    read, rows = batch_reader()
    r = reader()
    records = [Record(o, event(T)) for o in range(SEAL_ROWS)]
    read.read(r, records, now_ms=T)
    read.read(r, [Record(SEAL_ROWS, event(T))], now_ms=T)  # too few: left open
    assert [b.num_rows for b in rows.take()[2].batches] == [SEAL_ROWS, 1]


def test_a_record_nested_too_deep_to_write_again_is_a_dead_letter_and_the_batch_goes_on():
    read, rows = batch_reader()
    deep: list = []
    for _ in range(300):
        deep = [deep]
    records = [Record(0, json.dumps({**orjson.loads(event(T)), "x": deep}).encode())]
    records.append(Record(1, event(T)))
    out = read.read(reader(), records, now_ms=T)
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(0, "too_deep")]
    assert [orjson.loads(v)["kafka_offset"] for vs in out.enriched.values() for _, v in vs] == [1]
    assert lake_offsets(rows) == [1]


def test_a_record_whose_enriched_form_does_not_fit_is_dead_lettered_on_every_path():
    """Too large for the enriched topic (docs/contract.md, Limits): dead-lettered with
    `too_large`, left out of the lake, and its event time moves no clock, whether it is
    read for every sink or again for the lake only (each sink holds the same records)."""
    limits = RecordLimits(enriched=2_000, dead_letter=100_000, user_keyed=100_000)
    big = event(T + 5 * MIN, blob="x" * 2_000)
    records = [Record(0, event(T)), Record(1, big), Record(2, event(T - 3 * MIN))]
    for kafka_from in (0, 3):  # every sink; the lake only
        rows = LakeRows()
        read = BatchReader(5 * MIN, KeyPartitioner(4), KeyPartitioner(4), rows, limits)
        r = reader(kafka_from=kafka_from)
        out = read.read(r, records, now_ms=T + 10 * MIN)
        assert lake_offsets(rows) == [0, 2]
        assert r.clock.stream_time == T  # the big record's time counted nowhere
        if kafka_from == 0:
            assert [(d.offset, d.reason) for d in out.dead_letters] == [(1, "too_large")]
            assert "more than the 2,000" in out.dead_letters[0].detail
            enriched = [orjson.loads(v) for rs in out.enriched.values() for _, v in rs]
            assert [(e["kafka_offset"], e["late"]) for e in enriched] == [(0, False), (2, True)]
        else:
            assert not out


def test_the_lake_keeps_the_clock_after_its_rows_and_their_size():
    read, rows = batch_reader()
    r = reader()
    read.read(r, [Record(0, event(T)), Record(1, event(T + MIN)), Record(2, b"bad")], T + MIN)
    assert rows.clock(2) == T + MIN
    assert rows.nbytes() == len(event(T)) + len(event(T + MIN))
    r.clock.stream_time = T - 10 * MIN  # a reopened reader's clock is not the rows'
    assert rows.clock(2) == T + MIN


def test_a_record_that_meets_a_bug_is_dead_lettered_and_the_batch_goes_on(monkeypatch):
    """An exception nobody classified, raised by one record (a bug in a library or here):
    that record goes to the dead-letter topic as `internal_error` with the exception,
    the others of its batch are read as usual; before, it stopped the partition."""
    from app.source import reader as reader_module

    real = reader_module.iso_utc

    def iso_utc(ms):
        if ms == T + 1:
            raise ValueError("a bug met on this value")
        return real(ms)

    monkeypatch.setattr(reader_module, "iso_utc", iso_utc)
    read, rows = batch_reader()
    out = read.read(
        reader(), [Record(0, event(T)), Record(1, event(T + 1)), Record(2, event(T))], T
    )
    assert [(d.offset, d.reason) for d in out.dead_letters] == [(1, "internal_error")]
    assert "ValueError: a bug met on this value" in out.dead_letters[0].detail
    assert lake_offsets(rows) == [0, 2] and out.events == 2


def test_max_future_is_measured_from_max_future_from_when_set_not_from_the_read_time():
    rows = LakeRows()
    fixed = BatchReader(5 * MIN, KeyPartitioner(4), KeyPartitioner(4), rows, future_from_ms=T)
    records = [Record(0, event(T + 5 * MIN)), Record(1, event(T + 5 * MIN + 1))]
    for now_ms in (T - 60 * MIN, T, T + 60 * MIN):  # whenever the batch is read
        out = fixed.read(reader(), records, now_ms)
        assert [(d.offset, d.reason) for d in out.dead_letters] == [(1, "future_event_time")]
    # unset: the read time
    read, _ = batch_reader()
    assert not read.read(reader(), records, T + MIN).dead_letters
