"""Each source offset once: commits record where a partition stops, overlaps are fenced."""

from __future__ import annotations

import multiprocessing

import pytest

from app.errors import PipelineError
from app.sinks.lake import LakeFenced, LakePosition, LakeTable
from tests.unit.app.sinks.lake.support import (
    APP,
    DAY,
    T0,
    check_contiguous,
    compete,
    offsets,
    rows_for,
)


def test_a_commit_is_resumed_after_and_an_overlapping_one_is_fenced(tmp_path):
    lake = LakeTable(tmp_path, APP)
    assert lake.resume(0) == LakePosition(0, None)
    spanning = rows_for(0, 0, 3, day_of=lambda offset: T0 + (offset - 1) * DAY)
    lake.commit({0: spanning, 1: rows_for(1, 0, 5)}, {0: 777})
    assert lake.resume(0) == LakePosition(3, 777)
    assert lake.resume(1) == LakePosition(5, None)
    assert lake.resume(2) == LakePosition(0, None)
    assert LakeTable(tmp_path, "other-app").resume(0) == LakePosition(0, None)

    version = lake.open().version()
    with pytest.raises(LakeFenced) as fenced:
        lake.commit({1: rows_for(1, 5, 2), 0: rows_for(0, 2, 4)}, {0: 900, 1: 900})
    assert isinstance(fenced.value, PipelineError)
    assert fenced.value.held == {0: 2}
    table = lake.open()
    assert table.version() == version
    assert check_contiguous(offsets(table)) == {0: 3, 1: 5}
    assert lake.resume(0) == LakePosition(3, 777)

    lake.commit({0: rows_for(0, 3, 4)}, {0: 900})
    assert lake.resume(0) == LakePosition(7, 900)
    dates = {str(d) for d in lake.open().to_pyarrow_table()["event_date"].to_pylist()}
    assert dates == {"2024-10-03", "2024-10-04", "2024-10-05"}
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert folders == [
        "_delta_log",
        "event_date=2024-10-03",
        "event_date=2024-10-04",
        "event_date=2024-10-05",
    ]


def test_extra_fields_late_flags_and_utc_times_round_trip(tmp_path):
    lake = LakeTable(tmp_path, APP)
    lake.commit({2: rows_for(2, 0, 8)}, {2: T0})
    data = lake.open().to_pyarrow_table().sort_by("kafka_offset")
    assert data["late"].to_pylist() == [o % 7 == 0 for o in range(8)]
    assert data["extra"].to_pylist() == [None] * 8
    assert [t.isoformat() for t in data["event_time"].to_pylist()][:2] == [
        "2024-10-04T00:00:00+00:00",
        "2024-10-04T00:00:00.001000+00:00",
    ]


def test_two_processes_racing_for_the_same_partitions_lose_and_repeat_nothing(tmp_path):
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(2) as pool:
        results = [
            pool.apply_async(compete, (str(tmp_path), [0, 1, 2], 25, 40, "today")) for _ in range(2)
        ]
        outcomes = [r.get(timeout=240) for r in results]
    counts = check_contiguous(offsets(LakeTable(tmp_path, APP).open()))
    # every commit of both processes landed once: 50 commits of 40 rows per partition
    assert counts == {0: 2000, 1: 2000, 2: 2000}, outcomes
    lake = LakeTable(tmp_path, APP)
    assert all(lake.resume(p).next_offset == 2000 for p in range(3))
    print(f"\nfenced / commit retries per process: {outcomes}")
