"""Rows, readers and processes for the lake tests (module level: spawned processes import it)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from deltalake import DeltaTable

from app.events import Event
from app.sinks.lake import LakeFenced, LakeRows, LakeTable
from app.sinks.lake.rows import PartitionRows
from app.sinks.lake.schema import to_arrow

DAY = 86_400_000
T0 = 20_000 * DAY  # 2024-10-04T00:00:00Z
APP = "test-app"


def event(t: int, **extra) -> Event:
    fields = {"event_time": t, "user_id": "u1", "event_type": "page_view", "page_url": "/a"}
    return Event(t, "u1", "page_view", "/a", fields | extra)


def columns(rows: PartitionRows) -> dict[str, list]:
    """Every column of the rows as a Python list, as the lake commit converts them."""
    return to_arrow({rows.partition: rows}).to_pydict()


def rows_for(partition: int, first: int, count: int, day_of=lambda offset: T0):
    """PartitionRows of `count` offsets from `first`, event times chosen by `day_of`."""
    rows = LakeRows()
    for offset in range(first, first + count):
        rows.add(partition, offset, event(day_of(offset) + offset % 1000), T0, offset % 7 == 0)
    return rows.take()[partition]


def offsets(table: DeltaTable) -> Counter:
    data = table.to_pyarrow_table(columns=["kafka_partition", "kafka_offset"])
    return Counter(
        zip(data["kafka_partition"].to_pylist(), data["kafka_offset"].to_pylist(), strict=True)
    )


def check_contiguous(seen: Counter) -> dict[int, int]:
    """Each partition's offsets are 0..n-1, each once; returns n per partition."""
    assert not [k for k, n in seen.items() if n > 1], "duplicated offsets"
    by_partition = defaultdict(set)
    for partition, offset in seen:
        by_partition[partition].add(offset)
    for partition, found in by_partition.items():
        assert found == set(range(len(found))), f"gap in partition {partition}"
    return {p: len(found) for p, found in by_partition.items()}


def compete(lake_dir: str, partitions: list[int], commits: int, rows: int, day_of_name: str):
    """Commit `commits` batches, each continuing every partition where the table stops;
    a batch another process wrote first is fenced and taken again from the new end."""
    day_of = DAY_OFFSETS[day_of_name]
    lake = LakeTable(lake_dir, APP)
    fenced = 0
    for _ in range(commits):
        while True:
            batch = {p: rows_for(p, lake.resume(p).next_offset, rows, day_of) for p in partitions}
            try:
                lake.commit(batch, {p: T0 + b.last_offset for p, b in batch.items()})
                break
            except LakeFenced:
                fenced += 1
    return fenced, lake.commit_retries


def _closed_and_open_day(offset: int) -> int:
    # mostly yesterday (a closed day, compacted meanwhile), now and then today
    return T0 - DAY if offset % 5 else T0


DAY_OFFSETS = {"today": lambda offset: T0, "mixed": _closed_and_open_day}


def now_ms() -> int:
    return int(time.time() * 1000)
