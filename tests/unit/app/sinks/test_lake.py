"""Lake files: one per date per flush, atomic, and a resume point that survives crashes."""

from __future__ import annotations

import pyarrow.parquet as pq

from app.events import Event
from app.sinks import lake

DAY = 86_400_000
T0 = 20_000 * DAY  # 2024-10-04T00:00:00Z


def buffer_with(times: list[int], first_offset: int = 0) -> lake.PartitionBuffer:
    buf = lake.LakeBuffer()
    for i, t in enumerate(times):
        event = Event(
            t,
            "u1",
            "page_view",
            "/a",
            {
                "event_time": t,
                "user_id": "u1",
                "event_type": "page_view",
                "page_url": "/a",
                "campaign": "x",
            },
        )
        buf.add(3, first_offset + i, event, T0)
    return buf.take()[3]


def test_a_flush_spanning_dates_writes_one_file_per_date(tmp_path):
    written = lake.write_partition(tmp_path, 3, buffer_with([T0 - 1, T0, T0 + DAY]), 777)
    assert sorted(p.parent.name for p in written) == [
        "event_date=2024-10-03",
        "event_date=2024-10-04",
        "event_date=2024-10-05",
    ]
    assert {p.name for p in written} == {"part-0003-000000000000-000000000002.parquet"}
    assert not list(tmp_path.glob("**/.*"))
    table = pq.read_table(written[0])
    assert table.column("extra").to_pylist() == ['{"campaign":"x"}']
    assert lake.resume_point(tmp_path, 3) == (2, 777)
    assert lake.resume_point(tmp_path, 4) == (-1, None)


def test_a_flush_cut_short_by_a_crash_is_removed_and_the_previous_one_counts(tmp_path):
    lake.write_partition(tmp_path, 3, buffer_with([T0, T0 + 1]), 100)
    second = lake.write_partition(tmp_path, 3, buffer_with([T0 + 2, T0 + DAY], 2), 200)
    second[1].unlink()  # the crash came between the two renames
    assert lake.resume_point(tmp_path, 3) == (1, 100)
    assert not second[0].exists()
