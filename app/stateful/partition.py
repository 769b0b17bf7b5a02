"""One user-keyed partition this worker owns: its aggregator, outbox, local state,
checkpoint and the one position that counts, the input offset its state covers.

The stage's loop hands it batches (`apply`); at each commit it turns what changed
into changelog records (`stage_commit`), and once that commit is visible it writes
the same records to the local store (`committed`). Final rows wait in the outbox,
persisted with the state, until PostgreSQL confirms them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from app.commit.checkpoint import PartitionCheckpoint
from app.stateful import changelog
from app.stateful.outbox import Outbox
from app.stateful.state import LocalState
from app.throttle import LogThrottle
from app.wire import WatermarkMark, decode
from tables.aggregator import Changes, PartitionAggregator

log = logging.getLogger(__name__)
_skip_log = LogThrottle(60)


@dataclass
class StagedCommit:
    """What one commit of the partition carries, for after it is visible."""

    batch: int  # the PostgreSQL batch number of its rows
    changes: Changes
    records: list[tuple[bytes, bytes | None]]
    input_next: int


@dataclass
class StatefulPartition:
    partition: int
    aggregator: PartitionAggregator
    outbox: Outbox
    local: LocalState
    checkpoint: PartitionCheckpoint
    input_next: int | None  # the next input offset to apply; the state covers all before
    changelog_next: int
    restored_records: int = 0  # changelog records read when it was opened
    restore_seconds: float = 0.0
    skipped_records: int = 0  # user-keyed records that could not be applied (a bug)
    committed_input: int = field(init=False)  # input_next as of the last commit

    def __post_init__(self) -> None:
        self.committed_input = self.input_next

    def apply(self, records, wall_s: float) -> None:
        """Apply a fetched batch (user-keyed records, oldest first)."""
        aggregator = self.aggregator
        add, mark = aggregator.add, aggregator.mark
        next_offset = self.input_next
        for record in records:
            if record.offset < next_offset:
                continue  # fetched before a seek back to the state's position
            next_offset = record.offset + 1
            try:
                item = decode(record.value)
                if type(item) is WatermarkMark:
                    mark(item.source, item.watermark, item.idle, item.sources, wall_s)
                else:
                    for event in item:
                        add(*event)
            except Exception:  # a bug met on one record: said, counted, not stopped on
                self.skipped_records += 1
                if _skip_log.allow(self.partition):
                    log.exception(
                        "stateful: partition %d offset %d could not be applied; skipped "
                        "(%d so far; logged once a minute)",
                        self.partition,
                        record.offset,
                        self.skipped_records,
                    )
        self.input_next = next_offset

    def tick(self, wall_s: float) -> None:
        """Time moves on by the wall clock while every source is idle."""
        self.aggregator.tick(wall_s)

    @property
    def pending(self) -> bool:
        return self.input_next != self.committed_input or self.aggregator.changes.any_change()

    def stage_commit(self, topic: str, batch: int, confirmed: int) -> StagedCommit:
        """Turn what changed since the last commit into changelog records, added to the
        checkpoint: every changed key, the outbox's changes (rows PostgreSQL confirmed
        up to batch `confirmed` leave it) and the position."""
        changes = self.aggregator.take_changes()
        outbox = self.outbox
        outbox.release(confirmed)
        outbox.hold(changes, batch)
        writes: dict[str, Any] = self.aggregator.snapshot(changes)
        writes.update(outbox.snapshot())
        writes[changelog.POSITION] = self.aggregator.checkpoint(self.input_next)
        records = changelog.records(writes)
        self.checkpoint.add(topic, self.partition, records)
        return StagedCommit(batch, changes, records, self.input_next)

    def committed(self, staged: StagedCommit, changelog_next: int) -> None:
        """The commit is visible: the local store takes the same records."""
        self.committed_input = staged.input_next
        self.changelog_next = changelog_next
        self.local.write(staged.records, changelog_next, staged.input_next)
