"""Parquet lake, Hive-partitioned by event_date (SPEC section 4).

A file holds one flush of one source partition and is named by its offset range,
`part-<partition>-<first offset>-<last offset>.parquet`; it is written under a hidden
temporary name and renamed, so readers never see half a file. On assignment the
highest offset in the lake tells where the partition's previous owner stopped; the
file's metadata also carries the source clock so lateness is judged the same.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from app.events import Event

SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("ms", tz="UTC")),
        ("user_id", pa.string()),
        ("event_type", pa.string()),
        ("page_url", pa.string()),
        ("event_id", pa.string()),
        ("extra", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("processing_time", pa.timestamp("ms", tz="UTC")),
    ]
)
_KNOWN = frozenset({"event_time", "user_id", "event_type", "page_url", "event_id"})
_NAME = re.compile(r"^part-(\d+)-(\d+)-(\d+)\.parquet$")
_DAY_MS = 86_400_000
log = logging.getLogger(__name__)
_EPOCH = date(1970, 1, 1)


@dataclass
class PartitionBuffer:
    first_offset: int = -1
    last_offset: int = -1
    columns: dict[str, list] = field(default_factory=lambda: {f.name: [] for f in SCHEMA})

    def __len__(self) -> int:
        return len(self.columns["kafka_offset"])


def _event_id(value) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


class LakeBuffer:
    """Rows waiting for the next flush, per source partition."""

    def __init__(self) -> None:
        self.partitions: dict[int, PartitionBuffer] = defaultdict(PartitionBuffer)

    def add(self, partition: int, offset: int, event: Event, processing_ms: int) -> None:
        buf = self.partitions[partition]
        if buf.first_offset < 0:
            buf.first_offset = offset
        buf.last_offset = offset
        cols = buf.columns
        fields = event.fields
        cols["event_time"].append(event.event_time)
        cols["user_id"].append(event.user_id)
        cols["event_type"].append(event.event_type)
        cols["page_url"].append(event.page_url)
        cols["event_id"].append(_event_id(fields.get("event_id")))
        has_extra = not fields.keys() <= _KNOWN
        extra = {k: v for k, v in fields.items() if k not in _KNOWN} if has_extra else None
        cols["extra"].append(orjson.dumps(extra).decode() if extra else None)
        cols["kafka_partition"].append(partition)
        cols["kafka_offset"].append(offset)
        cols["processing_time"].append(processing_ms)

    def rows(self) -> int:
        return sum(len(b) for b in self.partitions.values())

    def take(self) -> dict[int, PartitionBuffer]:
        taken = {p: b for p, b in self.partitions.items() if len(b)}
        self.partitions = defaultdict(PartitionBuffer)
        return taken


def write_partition(
    lake_dir: Path, partition: int, buf: PartitionBuffer, stream_time: int
) -> list[Path]:
    """Write one partition's buffered rows, one file per event_date. Blocking: run in a thread."""
    table = pa.table(buf.columns, schema=SCHEMA)
    name = f"part-{partition:04d}-{buf.first_offset:012d}-{buf.last_offset:012d}.parquet"
    rows_by_day: dict[int, list[int]] = defaultdict(list)
    for i, t in enumerate(buf.columns["event_time"]):
        rows_by_day[t // _DAY_MS].append(i)
    # every file of one flush says how many there are: resume_point() ignores a flush
    # that a crash left with only some of its dates renamed into place
    table = table.replace_schema_metadata(
        {
            b"source_stream_time": str(stream_time).encode(),
            b"flush_files": str(len(rows_by_day)).encode(),
        }
    )
    written = []
    for day, rows in sorted(rows_by_day.items()):
        part = table if len(rows_by_day) == 1 else table.take(pa.array(rows))
        folder = lake_dir / f"event_date={(_EPOCH + timedelta(days=day)).isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        pq.write_table(part, tmp, compression="zstd", row_group_size=1_000_000)
        written.append((tmp, folder / name))
    for tmp, final in written:
        os.replace(tmp, final)
    return [final for _, final in written]


def resume_point(lake_dir: Path, partition: int) -> tuple[int, int | None]:
    """(highest offset of this source partition in the lake or -1, its source stream time).

    A flush whose files did not all reach the lake (a crash between two renames) is
    removed: its offsets are read and written again.
    """
    if not lake_dir.exists():
        return -1, None
    prefix = f"part-{partition:04d}-"
    flushes: dict[str, list[str]] = defaultdict(list)
    for folder in lake_dir.glob("event_date=*"):
        for entry in os.scandir(folder):
            if entry.name.startswith(prefix) and _NAME.match(entry.name):
                flushes[entry.name].append(entry.path)
    for name in sorted(flushes, key=lambda n: int(_NAME.match(n).group(3)), reverse=True):
        paths = flushes[name]
        meta = pq.read_schema(paths[0]).metadata or {}
        if len(paths) < int(meta.get(b"flush_files", b"1")):
            log.warning(
                "lake: removing incomplete flush %s (%d of %s files)",
                name,
                len(paths),
                meta[b"flush_files"].decode(),
            )
            for path in paths:
                os.unlink(path)
            continue
        stream_time = meta.get(b"source_stream_time")
        return int(_NAME.match(name).group(3)), int(stream_time) if stream_time else None
    return -1, None


def clean_temporaries(lake_dir: Path) -> int:
    removed = 0
    for tmp in lake_dir.glob("event_date=*/.part-*.tmp"):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed
