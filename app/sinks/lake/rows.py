"""Rows waiting for the next lake commit, per source partition.

`LakeRows.add` runs once per event on the worker's hot path, so it only appends the
raw pieces (offset, the Event, the processing time, the late flag) to one flat list
per source partition: no per-event tuple or dict. After each read batch the reader
calls `seal`, which turns a partition's open rows into one Arrow record batch in
SCHEMA (`schema.to_record_batch`) once there are SEAL_ROWS of them: a buffered row is
then about 160 bytes of Arrow columns instead of about 770 bytes of Python objects
kept alive (the Event, its dict, its strings), up to 2 x LAKE_FLUSH_ROWS rows, and the
commit thread has no conversion left to do while holding the GIL
(docs/performance.md, 2026-12-06).
"""

from __future__ import annotations

import pyarrow as pa

from app.events import Event
from app.sinks.lake.schema import STRIDE, to_record_batch

# open rows converted at once: a few ms of the event loop's time each
SEAL_ROWS = 1_024
# ... or sooner, once their records hold this many bytes: 1,023 rows of 1 MB each
# would otherwise wait as Python objects
SEAL_BYTES = 8 << 20


class PartitionRows:
    """One source partition's rows taken for a commit: offsets first_offset..last_offset
    (with gaps where the topic has none), as record batches in SCHEMA."""

    __slots__ = ("batches", "first_offset", "last_offset", "nbytes", "partition", "rows")

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.batches: list[pa.RecordBatch] = []
        self.first_offset = -1
        self.last_offset = -1
        self.rows = 0
        self.nbytes = 0

    def append(self, flat: list) -> None:
        """Convert open rows (STRIDE items each) and add them after the ones held."""
        batch = to_record_batch(self.partition, flat)  # first: a failure changes nothing
        if not self.batches:
            self.first_offset = flat[0]
        self.last_offset = flat[-STRIDE]
        self.rows += len(flat) // STRIDE
        self.nbytes += batch.nbytes
        self.batches.append(batch)

    def __len__(self) -> int:
        return self.rows

    def __repr__(self) -> str:
        return (
            f"PartitionRows(partition={self.partition}, offsets {self.first_offset}.."
            f"{self.last_offset}, {self.rows} rows)"
        )


class LakeRows:
    """Rows per source partition until the lake takes them, with the partition's clock
    after its last row (what the lake commit records beside the offset)."""

    __slots__ = ("_clocks", "_open", "_open_bytes", "_sealed")

    def __init__(self) -> None:
        self._open: dict[int, list] = {}  # rows not converted yet, STRIDE items each
        self._open_bytes: dict[int, int] = {}  # their records' size
        self._sealed: dict[int, PartitionRows] = {}
        self._clocks: dict[int, int] = {}

    def add(
        self, partition: int, offset: int, event: Event, processing_ms: int, late: bool
    ) -> None:
        # the Event is kept by reference until sealed: the caller must not change it
        try:
            self._open[partition].extend((offset, event, processing_ms, late))
        except KeyError:
            self._open[partition] = [offset, event, processing_ms, late]

    def added(self, partition: int, nbytes: int, stream_time: int) -> None:
        """After a read batch: the size of the records whose rows it added, and the
        partition's stream time after them."""
        self._open_bytes[partition] = self._open_bytes.get(partition, 0) + nbytes
        self._clocks[partition] = stream_time

    def clock(self, partition: int) -> int | None:
        return self._clocks.get(partition)

    def seal(self, partition: int, min_rows: int = SEAL_ROWS) -> None:
        """Convert the partition's open rows to Arrow if there are `min_rows` or more, or
        SEAL_BYTES of them."""
        flat = self._open.get(partition)
        if flat is None:
            return
        if len(flat) < min_rows * STRIDE and self._open_bytes.get(partition, 0) < SEAL_BYTES:
            return
        sealed = self._sealed.get(partition) or PartitionRows(partition)
        sealed.append(flat)  # if the conversion fails, the rows stay open, nothing lost
        self._sealed[partition] = sealed
        del self._open[partition]
        self._open_bytes.pop(partition, None)

    def rows(self) -> int:
        open_rows = sum(len(flat) for flat in self._open.values()) // STRIDE
        return open_rows + sum(sealed.rows for sealed in self._sealed.values())

    def nbytes(self) -> int:
        """About what the rows hold: their records' size until sealed, Arrow's after."""
        return sum(self._open_bytes.values()) + sum(s.nbytes for s in self._sealed.values())

    def take(self) -> dict[int, PartitionRows]:
        for partition in list(self._open):
            self.seal(partition, min_rows=1)
        taken, self._sealed = self._sealed, {}
        return taken

    def drop(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._open.pop(partition, None)
            self._open_bytes.pop(partition, None)
            self._sealed.pop(partition, None)
            self._clocks.pop(partition, None)
