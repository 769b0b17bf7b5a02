"""LakeRows: what a flush takes, and the columns it becomes."""

from __future__ import annotations

import sys
from datetime import date

import pyarrow as pa
import pytest

from app.sinks.lake import LakeRows
from app.sinks.lake import rows as lake_rows
from app.sinks.lake.schema import SCHEMA, to_arrow
from tests.unit.app.sinks.lake.support import DAY, T0, columns, event


def test_rows_are_taken_per_partition_and_revoked_ones_dropped():
    rows = LakeRows()
    rows.add(3, 10, event(T0, campaign="x"), T0 + 5, False)
    rows.add(3, 12, event(T0 + 1, event_id=7), T0 + 5, True)
    rows.add(4, 0, event(T0 - 1), T0 + 5, False)
    rows.add(5, 0, event(T0 - 1), T0 + 5, False)
    rows.drop({5})
    assert rows.rows() == 3
    taken = rows.take()
    assert rows.rows() == 0 and rows.take() == {}
    assert set(taken) == {3, 4}
    three = taken[3]
    assert (three.first_offset, three.last_offset, len(three)) == (10, 12, 2)
    assert columns(three)["extra"] == ['{"campaign":"x"}', None]
    assert columns(three)["event_id"] == [None, "7"]
    assert columns(three)["late"] == [False, True]


def test_rows_become_utc_columns_with_their_date():
    rows = LakeRows()
    rows.add(1, 0, event(T0 - 1), T0, False)
    rows.add(1, 1, event(T0 + DAY), T0, True)
    table = to_arrow(rows.take())
    assert table.schema == SCHEMA
    assert table["event_date"].to_pylist() == [date(2024, 10, 3), date(2024, 10, 5)]
    assert table["event_time"].cast(pa.int64()).to_pylist() == [(T0 - 1) * 1000, (T0 + DAY) * 1000]
    assert table["kafka_partition"].to_pylist() == [1, 1]
    assert str(table.schema.field("event_time").type) == "timestamp[us, tz=UTC]"


def test_open_rows_are_sealed_to_arrow_once_there_are_enough_and_come_out_in_order():
    rows = LakeRows()
    for offset in range(5):
        fields = {"event_id": 7} if offset == 3 else {"campaign": "x"} if offset == 4 else {}
        rows.add(1, offset, event(T0 + offset, **fields), T0, False)
        rows.seal(1, min_rows=2)
    for offset in range(3):
        rows.add(2, offset, event(T0), T0, True)
    rows.seal(2, min_rows=4)  # too few: still open
    assert rows.rows() == 8
    taken = rows.take()
    assert [b.num_rows for b in taken[1].batches] == [2, 2, 1]  # the last sealed by take
    assert [b.num_rows for b in taken[2].batches] == [3]
    assert (taken[1].first_offset, taken[1].last_offset, len(taken[1])) == (0, 4, 5)
    table = to_arrow(taken)
    assert table.schema == SCHEMA and table.num_rows == 8
    assert table["kafka_partition"].to_pylist() == [1] * 5 + [2] * 3
    assert table["kafka_offset"].to_pylist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert table["event_id"].to_pylist()[3] == "7"
    assert table["extra"].to_pylist()[4] == '{"campaign":"x"}'
    assert table["late"].to_pylist() == [False] * 5 + [True] * 3


def test_sealed_rows_hold_no_event_and_dropped_partitions_lose_both_kinds():
    rows = LakeRows()
    held = event(T0)
    rows.add(1, 0, held, T0, False)
    rows.seal(1, min_rows=1)
    rows.add(1, 1, event(T0), T0, False)
    assert sys.getrefcount(held) == 2  # the Event went with its conversion
    rows.drop({1})
    assert rows.rows() == 0 and rows.take() == {}


def test_a_conversion_that_fails_leaves_the_rows_open_and_the_offsets_as_they_were(
    monkeypatch,
):
    rows = LakeRows()
    rows.add(1, 0, event(T0), T0, False)
    rows.seal(1, min_rows=1)

    def fail(partition, flat):
        raise MemoryError("arrow")

    monkeypatch.setattr(lake_rows, "to_record_batch", fail)
    rows.add(1, 1, event(T0), T0, False)
    with pytest.raises(MemoryError):
        rows.seal(1, min_rows=1)
    assert rows.rows() == 2
    monkeypatch.undo()
    taken = rows.take()[1]
    assert (taken.first_offset, taken.last_offset, len(taken)) == (0, 1, 2)
    assert columns(taken)["kafka_offset"] == [0, 1]
