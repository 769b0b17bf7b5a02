"""The lake's Delta table: atomic commits that record where each source partition is.

Each commit carries, per source partition, two Delta application transactions: the
last offset it holds (`<app_id>-source-<partition>`) and the source clock at that
point (`<app_id>-clock-<partition>`). The log keeps the newest version of each, so a
new owner of a partition reads both in one table load, and any Delta reader can
check them. A commit is made only on top of the exact table version whose
transactions it checked (no automatic rebase): a commit that lost the race is
checked again against the newer version, so two workers can never both write the
same offsets.

The table is a folder or an object-store URI (`LakeLocation`, location.py): every
operation is the same on both, with the location's storage options; on S3 a commit
is a conditional put of the next log entry, so exactly one of several writers racing
for a version wins it.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from app.errors import PipelineError
from app.sinks.lake.location import LakeLocation, resolve
from app.sinks.lake.maintenance import maintain
from app.sinks.lake.rows import PartitionRows
from app.sinks.lake.schema import PARTITION_COLUMN, SCHEMA, to_arrow

log = logging.getLogger(__name__)
WEEK_MS = 7 * 86_400_000
TARGET_FILE_BYTES = 128 << 20
COMMIT_ATTEMPTS = 50
_WRITER = WriterProperties(compression="ZSTD")


@dataclass(frozen=True)
class LakePosition:
    next_offset: int  # the first offset of the partition the table does not hold
    stream_time: int | None  # the source clock recorded with that offset, if any


class LakeFenced(PipelineError):
    """The table already holds offsets of this batch: another worker wrote them."""

    def __init__(self, held: Mapping[int, int]) -> None:
        self.held = dict(held)  # source partition -> last offset the table holds
        super().__init__(
            "lake already holds "
            + ", ".join(f"partition {p} up to offset {o}" for p, o in sorted(self.held.items()))
        )


def retention_setting(retention_ms: int) -> str:
    return f"interval {max(1, retention_ms // 1000)} seconds"


class LakeTable:
    def __init__(
        self,
        lake: str | Path | LakeLocation,
        app_id: str,
        retention_ms: int = WEEK_MS,
        target_file_rows: int | None = None,
        target_file_bytes: int = TARGET_FILE_BYTES,
        close_after_ms: int = 3_600_000,
    ) -> None:
        if not isinstance(lake, LakeLocation):  # a folder, or a URI with the env's options
            lake = resolve(str(lake), os.environ)
        self.location = lake
        self.path = lake.uri
        self.options = dict(lake.storage_options) or None
        self.app_id = app_id
        self.retention_ms = retention_ms
        self.target_file_rows = target_file_rows
        self.target_file_bytes = target_file_bytes
        # a day is compacted once this long after its UTC midnight has passed
        self.close_after_ms = close_after_ms
        self._table: DeltaTable | None = None
        self._lock = threading.Lock()
        self.commit_retries = 0

    def source_txn(self, partition: int) -> str:
        return f"{self.app_id}-source-{partition}"

    def clock_txn(self, partition: int) -> str:
        return f"{self.app_id}-clock-{partition}"

    # -- positions -------------------------------------------------------------

    def resume(self, partition: int) -> LakePosition:
        with self._lock:
            table = self._load(create=False)
            if table is None:
                return LakePosition(0, None)
            last = table.transaction_version(self.source_txn(partition))
            clock = table.transaction_version(self.clock_txn(partition))
        return LakePosition(0 if last is None else last + 1, clock)

    # -- commits ---------------------------------------------------------------

    def commit(self, batches: Mapping[int, PartitionRows], stream_times: Mapping[int, int]) -> None:
        batches = {p: rows for p, rows in batches.items() if len(rows)}
        if not batches:
            return
        data = to_arrow(batches)
        now_ms = int(time.time() * 1000)
        transactions = [
            Transaction(self.source_txn(p), rows.last_offset, now_ms) for p, rows in batches.items()
        ]
        transactions += [
            Transaction(self.clock_txn(p), stream_times[p], now_ms)
            for p in batches
            if stream_times.get(p) is not None
        ]
        properties = CommitProperties(app_transactions=transactions, max_commit_retries=0)
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            with self._lock:
                table = self._load(create=True)
                self._check_not_written(table, batches)
                try:
                    write_deltalake(
                        table,
                        data,
                        mode="append",
                        partition_by=[PARTITION_COLUMN],
                        writer_properties=_WRITER,
                        commit_properties=properties,
                    )
                    return
                except CommitFailedError:
                    if attempt == COMMIT_ATTEMPTS:
                        raise
                    self.commit_retries += 1
            # the files of the lost attempt stay out of the log; vacuum removes them
            time.sleep(random.uniform(0, min(0.5, 0.01 * attempt)))

    def _check_not_written(self, table: DeltaTable, batches: Mapping[int, PartitionRows]) -> None:
        held = {}
        for partition, rows in batches.items():
            last = table.transaction_version(self.source_txn(partition))
            if last is not None and last >= rows.first_offset:
                held[partition] = last
        if held:
            raise LakeFenced(held)

    # -- the table -------------------------------------------------------------

    def _load(self, create: bool) -> DeltaTable | None:
        if self._table is not None:
            self._table.update_incremental()
            return self._table
        try:
            self._table = self.open()
        except TableNotFoundError:
            if not create:
                return None
            self._table = self._create()
        return self._table

    def _create(self) -> DeltaTable:
        if self.location.local:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        try:
            return DeltaTable.create(
                self.path,
                SCHEMA,
                storage_options=self.options,
                mode="ignore",
                partition_by=[PARTITION_COLUMN],
                configuration={
                    "delta.deletedFileRetentionDuration": retention_setting(self.retention_ms)
                },
            )
        except DeltaError:  # another process created it at the same moment
            return self.open()

    def open(self) -> DeltaTable:
        """The table as of now, for readers and maintenance (a handle of its own)."""
        return DeltaTable(self.path, storage_options=self.options)

    # -- maintenance -----------------------------------------------------------

    def maintain(self, now_ms: int) -> dict:
        try:
            table = self.open()
        except TableNotFoundError:
            return {
                "days_compacted": 0,
                "days_deferred": 0,
                "bytes_rewritten": 0,
                "files_before": 0,
                "files_after": 0,
                "files_per_day_before": {},
                "files_per_day_after": {},
                "files_vacuumed": 0,
                "version": None,
            }
        return maintain(
            table,
            now_ms,
            retention=retention_setting(self.retention_ms),
            target_file_rows=self.target_file_rows,
            target_file_bytes=self.target_file_bytes,
            close_after_ms=self.close_after_ms,
        )
