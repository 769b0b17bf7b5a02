"""Compaction of the table's days, open or closed, and vacuum of replaced files.

Compaction is Delta's OPTIMIZE on one event_date: it bin-packs the day's files smaller
than the target size into files of about that size and commits, in one step, the
removal of the old files and the addition of the new ones (dataChange=false), so a
reader of any version sees every row exactly once. Files already at least half the
target are left alone unless a smaller one still fits beside them, so a byte is
rewritten a bounded number of times.

When a day is compacted (see `plan`):
- any day, the open one included, once it has more than SMALL_FILES_MAX files smaller
  than half the target: a 10 s flush adds a file per date it touches, so this keeps an
  open day at a few dozen files instead of thousands;
- a closed day (close_after_ms past its end) as soon as it has more files than its
  size and the targets need (normally one).
A day too large for LARGE_FILES_MAX files of the target gets a target 4, 16, ... times
larger, so the number of files per day stays bounded at any rate.

OPTIMIZE commits on top of concurrent appends (they only add files; it removes only
those it rewrote), rebasing up to OPTIMIZE_COMMIT_RETRIES times; an attempt that still
loses (e.g. to another compaction of the same files) is planned again on the newest
version, COMPACT_ATTEMPTS times, then deferred to the next maintain. The replaced files
stay on disk for readers of older versions until the retention has passed; then vacuum
deletes them, together with files that no commit refers to (an attempt that lost a
commit race, a writer that died before its commit).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from datetime import date

import orjson
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, WriterProperties
from deltalake.exceptions import CommitFailedError

from app.sinks.lake.schema import DAY_MS, PARTITION_COLUMN

log = logging.getLogger(__name__)
_RETENTION_KEY = "delta.deletedFileRetentionDuration"
_EPOCH = date(1970, 1, 1)
# a day with more files than this below half its target size is compacted, even open
SMALL_FILES_MAX = 16
# past this many files of the target size, a day's target grows (x4 per step)
LARGE_FILES_MAX = 48
OPTIMIZE_COMMIT_RETRIES = 100
COMPACT_ATTEMPTS = 5
_ZSTD = WriterProperties(compression="ZSTD")


def files_per_day(table: DeltaTable) -> tuple[Counter, Counter, Counter]:
    """(files, bytes, rows) per event_date of the table's current version."""
    files, size, rows = Counter(), Counter(), Counter()
    for day, (sizes, nrows) in _day_files(table).items():
        files[day], size[day], rows[day] = len(sizes), sum(sizes), nrows
    return files, size, rows


def _day_files(table: DeltaTable) -> dict[str, tuple[list[int], int]]:
    """day -> (the sizes of its files, its rows), for the table's current version."""
    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    sizes: dict[str, list[int]] = {}
    rows: Counter = Counter()
    columns = (actions[f"partition.{PARTITION_COLUMN}"], actions["size_bytes"])
    for value, nbytes, nrows in zip(*columns, actions["num_records"], strict=True):
        day = str(value)
        sizes.setdefault(day, []).append(nbytes)
        rows[day] += nrows or 0
    return {day: (sizes[day], rows[day]) for day in sizes}


def closed(day: str, now_ms: int, close_after_ms: int) -> bool:
    end_ms = (date.fromisoformat(day) - _EPOCH).days * DAY_MS + DAY_MS
    return end_ms + close_after_ms <= now_ms


def day_target(size: int, rows: int, target_file_rows: int | None, target_file_bytes: int) -> int:
    """The file size a day is compacted to: the byte target, lowered to meet the row
    target, raised (x4 steps) while the day would need more than LARGE_FILES_MAX files."""
    target = target_file_bytes
    if target_file_rows and rows:
        target = min(target, max(1, size * target_file_rows // rows))
    while size > LARGE_FILES_MAX * target:
        target *= 4
    return target


def plan(
    sizes: list[int], rows: int, is_closed: bool, target_file_rows: int | None, target_bytes: int
) -> int | None:
    """The target size to compact a day of files `sizes` to, or None to leave it."""
    size = sum(sizes)
    target = day_target(size, rows, target_file_rows, target_bytes)
    small = sum(1 for s in sizes if s < target // 2)
    if small > SMALL_FILES_MAX:
        return target
    if is_closed:
        wanted = -(-size // target)
        if target_file_rows and rows:
            wanted = max(wanted, -(-rows // target_file_rows))
        if len(sizes) > max(1, wanted):
            return target
    return None


def _compact(table: DeltaTable, day: str, target: int) -> dict | None:
    """OPTIMIZE one day; None if every attempt lost a commit race."""
    for attempt in range(1, COMPACT_ATTEMPTS + 1):
        try:
            return table.optimize.compact(
                partition_filters=[(PARTITION_COLUMN, "=", day)],
                target_size=target,
                max_concurrent_tasks=1,
                writer_properties=_ZSTD,
                commit_properties=CommitProperties(max_commit_retries=OPTIMIZE_COMMIT_RETRIES),
            )
        except CommitFailedError as exc:  # e.g. another compaction removed those files
            log.info("lake: compaction of %s lost a commit race (%d): %s", day, attempt, exc)
            time.sleep(random.uniform(0, 0.05 * attempt))
            table.update_incremental()
    log.warning("lake: compaction of %s deferred to the next maintain", day)
    return None


def maintain(
    table: DeltaTable,
    now_ms: int,
    retention: str,
    target_file_rows: int | None,
    target_file_bytes: int,
    close_after_ms: int,
) -> dict:
    if table.metadata().configuration.get(_RETENTION_KEY) != retention:
        table.alter.set_table_properties({_RETENTION_KEY: retention})
    before = _day_files(table)
    compacted, skipped, rewritten = [], [], 0
    for day, (sizes, rows) in sorted(before.items()):
        target = plan(
            sizes, rows, closed(day, now_ms, close_after_ms), target_file_rows, target_file_bytes
        )
        if target is None:
            continue
        metrics = _compact(table, day, target)
        if metrics is None:
            skipped.append(day)
        elif metrics["numFilesRemoved"]:
            compacted.append(day)
            removed = metrics["filesRemoved"]  # a JSON string in deltalake 1.x
            removed = orjson.loads(removed) if isinstance(removed, str | bytes) else removed
            rewritten += removed["totalSize"]
    files = Counter({day: len(sizes) for day, (sizes, _) in before.items()})
    after = files_per_day(table)[0] if compacted else files
    vacuumed = table.vacuum(dry_run=False, full=True, enforce_retention_duration=True)
    if compacted:
        table.create_checkpoint()
    return {
        "days_compacted": len(compacted),
        "days_deferred": len(skipped),
        "bytes_rewritten": rewritten,
        "files_before": sum(files.values()),
        "files_after": sum(after.values()),
        "files_per_day_before": dict(files),
        "files_per_day_after": dict(after),
        "files_vacuumed": len(vacuumed),
        "version": table.version(),
    }
