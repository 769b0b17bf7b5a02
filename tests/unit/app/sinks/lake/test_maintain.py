"""Compaction and vacuum: never a duplicate, a gap or a half file for any reader."""

from __future__ import annotations

import multiprocessing
import time

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from app.sinks.lake import LakeTable
from app.sinks.lake.maintenance import LARGE_FILES_MAX, SMALL_FILES_MAX, day_target, plan
from tests.unit.app.sinks.lake.support import (
    APP,
    DAY,
    T0,
    check_contiguous,
    columns,
    compete,
    offsets,
    rows_for,
)

YESTERDAY = "2024-10-03"
AFTER_T0 = T0 + 2 * DAY  # T0's day and the day before are closed by then


def commit_many(lake: LakeTable, commits: int, rows: int = 50) -> None:
    for _ in range(commits):
        batch = {
            p: rows_for(p, lake.resume(p).next_offset, rows, lambda o: T0 - DAY) for p in (0, 1)
        }
        lake.commit(batch, {p: T0 for p in batch})


def every_version_is_whole(path) -> int:
    """Read each version of the table: offsets contiguous from 0, none twice; the number of
    versions read."""
    latest = DeltaTable(path).version()
    for version in range(latest + 1):
        check_contiguous(offsets(DeltaTable(path, version=version)))
    return latest + 1


def test_maintain_compacts_closed_days_while_another_process_commits(tmp_path):
    lake = LakeTable(tmp_path, APP, target_file_rows=1_000_000)
    commit_many(lake, 10)
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        writing = pool.apply_async(compete, (str(tmp_path), [0, 1, 2], 30, 30, "mixed"))
        figures = []
        while not writing.ready():
            figures.append(lake.maintain(AFTER_T0))
            time.sleep(0.05)
        writing.get(timeout=60)
    figures.append(lake.maintain(AFTER_T0))
    assert sum(f["days_compacted"] for f in figures) >= 2, figures
    final = figures[-1]
    # both days are closed: each ends as one file
    assert final["files_per_day_after"] == {YESTERDAY: 1, "2024-10-04": 1}, final
    check_contiguous(offsets(lake.open()))
    assert every_version_is_whole(tmp_path) > 30


def test_only_closed_days_are_compacted_and_files_follow_the_row_target(tmp_path):
    lake = LakeTable(tmp_path, APP, target_file_rows=2_000)
    commit_many(lake, 8, rows=500)  # 8000 rows of yesterday in 8 files
    lake.commit({0: rows_for(0, 4000, 10), 1: rows_for(1, 4000, 10)}, {})  # and today
    before = lake.open().version()
    figures = lake.maintain(T0 + DAY // 2)  # yesterday closed, today open
    assert figures["files_per_day_before"] == {YESTERDAY: 8, "2024-10-04": 1}
    after = figures["files_per_day_after"]
    assert 1 < after[YESTERDAY] < 8 and after["2024-10-04"] == 1, figures
    # the row target is met through sizes, so a day settles within a few rounds
    rounds = [lake.maintain(T0 + DAY // 2)["days_compacted"] for _ in range(3)]
    assert rounds[-1] == 0, rounds
    assert every_version_is_whole(tmp_path) > before


def test_vacuum_removes_replaced_files_only_after_the_retention(tmp_path):
    lake = LakeTable(tmp_path, APP, retention_ms=3_000)
    commit_many(lake, 5)
    files_before = set(tmp_path.glob("event_date=*/*.parquet"))
    version = lake.open().version()
    first = lake.maintain(AFTER_T0)
    assert first["files_before"] == 5 and first["files_after"] == 1
    assert first["files_vacuumed"] == 0
    # readers of the versions before compaction still find their files
    assert set(tmp_path.glob("event_date=*/*.parquet")) >= files_before
    check_contiguous(offsets(DeltaTable(tmp_path, version=version)))
    time.sleep(3.5)
    second = lake.maintain(AFTER_T0)
    assert second["files_vacuumed"] == 5
    assert not files_before & set(tmp_path.glob("event_date=*/*.parquet"))
    assert check_contiguous(offsets(lake.open())) == {0: 250, 1: 250}


def test_files_a_crash_left_behind_are_never_read_and_are_vacuumed(tmp_path):
    lake = LakeTable(tmp_path, APP, retention_ms=2_000)
    commit_many(lake, 2)
    day = tmp_path / f"event_date={YESTERDAY}"
    # a writer that died after writing its data file but before its commit ...
    orphan = rows_for(0, 100, 20, lambda o: T0 - DAY)
    offsets_only = pa.table({"kafka_offset": columns(orphan)["kafka_offset"]})
    pq.write_table(offsets_only, day / "part-0.parquet")
    # ... one that died in the middle of a file, and one in the middle of a log entry
    (day / "part-1.zstd.parquet").write_bytes(b"PAR1\x00half")
    (tmp_path / "_delta_log" / "_commit_00000000000000000003.json.tmp").write_text('{"add":')
    assert check_contiguous(offsets(lake.open())) == {0: 100, 1: 100}
    assert lake.resume(0).next_offset == 100
    lake.commit({0: rows_for(0, 100, 5, lambda o: T0 - DAY)}, {0: T0})
    assert check_contiguous(offsets(lake.open())) == {0: 105, 1: 100}
    time.sleep(2.5)
    lake.maintain(T0)  # nothing closed: vacuum only
    assert not (day / "part-0.parquet").exists()
    assert not (day / "part-1.zstd.parquet").exists()
    assert every_version_is_whole(tmp_path) >= 3


def version_of(path) -> int:
    """The lake's latest version; -1 before its first commit."""
    try:
        return DeltaTable(path).version()
    except TableNotFoundError:
        return -1


def test_the_open_day_stays_few_files_while_another_process_appends(tmp_path):
    lake = LakeTable(tmp_path, APP)
    today, now = "2024-10-04", T0 + DAY // 2  # T0's day is open all along
    spawn = multiprocessing.get_context("spawn")
    with spawn.Pool(1) as pool:
        writing = pool.apply_async(compete, (str(tmp_path), [0, 1, 2], 80, 25, "today"))
        figures = []
        while not writing.ready():
            before = version_of(tmp_path)
            figures.append(lake.maintain(now))
            if figures[-1]["version"] is None:  # no commit yet
                time.sleep(0.05)
                continue
            after = figures[-1]["files_per_day_after"]
            # what the maintain left, plus the commits that landed while it ran (one file
            # each): however fast the writer goes, not the files of every commit so far
            landed = figures[-1]["version"] - before
            assert after.get(today, 0) <= SMALL_FILES_MAX + landed, (landed, figures[-1])
            check_contiguous(offsets(lake.open()))
        _, retries = writing.get(timeout=60)
    figures.append(lake.maintain(now))
    assert figures[-1]["files_per_day_after"][today] <= SMALL_FILES_MAX + 1, figures[-1]
    # how many maintains ran while the writer did is a matter of speed: at least one
    # compaction (80 commits, 80 files, without one) and no deferral, whatever the speed
    compactions = sum(f["days_compacted"] for f in figures)
    assert compactions >= 1 and not any(f["days_deferred"] for f in figures), figures
    assert check_contiguous(offsets(lake.open())) == {0: 2000, 1: 2000, 2: 2000}
    assert every_version_is_whole(tmp_path) > 80
    print(f"\n{len(figures)} maintains, {compactions} compactions, writer retries {retries}")


def test_a_closed_or_open_day_is_compacted_by_its_small_files_only(tmp_path):
    lake = LakeTable(tmp_path, APP, target_file_rows=1_000)
    sizes = [10] * SMALL_FILES_MAX
    assert plan(sizes, 100, False, None, 1_000) is None
    assert plan([*sizes, 10], 100, False, None, 1_000) == 1_000
    assert plan([600, 10], 100, False, None, 1_000) is None  # open: few small files
    assert plan([600, 10], 100, True, None, 1_000) == 1_000  # closed: as few as it can
    assert plan([900, 900], 100, True, None, 1_000) is None
    # a day too large for LARGE_FILES_MAX files of the target gets a larger target
    assert day_target(LARGE_FILES_MAX, 1, None, 1) == 1
    assert day_target(LARGE_FILES_MAX * 4 + 1, 1, None, 1) == 16
    assert plan([3] * 70, 70, False, None, 1) == 16
    commit_many(lake, SMALL_FILES_MAX + 4, rows=5)  # yesterday's small files
    figures = lake.maintain(T0 - DAY // 2)  # while yesterday is still open
    assert figures["files_per_day_after"] == {YESTERDAY: 1}, figures
    assert figures["bytes_rewritten"] > 0
    assert lake.maintain(T0 - DAY // 2)["days_compacted"] == 0
    assert every_version_is_whole(tmp_path) > SMALL_FILES_MAX
