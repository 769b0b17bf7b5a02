"""Rows waiting for the next lake commit, per source partition.

`LakeRows.add` runs once per event on the worker's hot path, so it only appends the
raw pieces (offset, the Event, the processing time, the late flag) to one flat list
per source partition: no per-event tuple or dict (a surviving container per event
would also cost the garbage collector). Everything derived (the event_id text, the
`extra` JSON, the timestamps, kafka_partition, event_date) is computed in bulk by
`schema.to_arrow` when the commit thread takes the rows.
"""

from __future__ import annotations

from app.events import Event
from app.sinks.lake.schema import STRIDE, derive_columns


class PartitionRows:
    """One source partition's buffered rows: offsets first_offset..last_offset (with gaps
    where the topic has none). `flat` holds STRIDE items per row: offset, Event,
    processing time (epoch ms), late."""

    __slots__ = ("first_offset", "flat", "last_offset", "partition")

    def __init__(self, partition: int, flat: list) -> None:
        self.partition = partition
        self.flat = flat
        self.first_offset = flat[0]
        self.last_offset = flat[-STRIDE]

    def __len__(self) -> int:
        return len(self.flat) // STRIDE

    @property
    def columns(self) -> dict[str, list]:
        """The buffered columns (BUFFERED) as Python lists (derived on each call)."""
        return derive_columns(self.flat)

    def __repr__(self) -> str:
        return (
            f"PartitionRows(partition={self.partition}, offsets {self.first_offset}.."
            f"{self.last_offset}, {len(self)} rows)"
        )


class LakeRows:
    __slots__ = ("_partitions",)

    def __init__(self) -> None:
        self._partitions: dict[int, list] = {}

    def add(
        self, partition: int, offset: int, event: Event, processing_ms: int, late: bool
    ) -> None:
        # the Event is kept by reference until the commit: the caller must not change it
        try:
            self._partitions[partition].extend((offset, event, processing_ms, late))
        except KeyError:
            self._partitions[partition] = [offset, event, processing_ms, late]

    def rows(self) -> int:
        return sum(len(flat) for flat in self._partitions.values()) // STRIDE

    def take(self) -> dict[int, PartitionRows]:
        taken, self._partitions = self._partitions, {}
        return {p: PartitionRows(p, flat) for p, flat in taken.items()}

    def drop(self, partitions: set[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)
