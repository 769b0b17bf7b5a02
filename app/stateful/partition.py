"""One user-keyed partition this worker owns, as a task of the executor
(app/commit/task.py): its aggregator, outbox, local state, checkpoint and the one
position that counts, the input offset its state covers.

The executor hands it batches (`apply`); at each commit it turns what changed into
changelog records (`prepare_commit`), and once that commit is visible it writes the
same records to the local store and hands the rows to the row sinks (`committed`).
Final rows wait in the outbox, persisted with the state, until every row sink
confirms them.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from app import failpoints
from app.commit.checkpoint import Committed, PartitionCheckpoint
from app.commit.task import PreparedCommit
from app.sinks.contract import RowSinks
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
class StatefulWiring:
    """What every stateful partition hands its work to: one each per stage."""

    changelog_topic: str
    sinks: RowSinks
    # Numbers of the batches handed to the row sinks, which confirm them in order: one
    # sequence for every partition and ownership, so a number confirms only what was
    # handed over under it.
    batches: itertools.count


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
    wiring: StatefulWiring | None = None  # set by the stage once the partition is open

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

    def stored(self, staged: StagedCommit, changelog_next: int) -> None:
        """The commit is visible: the local store takes the same records."""
        self.committed_input = staged.input_next
        self.changelog_next = changelog_next
        self.local.write(staged.records, changelog_next, staged.input_next)

    # -- as a task of the executor (app/commit/task.py) ----------------------------

    @property
    def read_next(self) -> int:
        return self.input_next

    @property
    def committed_next(self) -> int:
        return self.committed_input

    @property
    def progress(self) -> int:
        return self.committed_input

    def prepare_commit(self) -> PreparedCommit | None:
        if not self.pending:
            return None
        wiring = self.wiring
        batch = next(wiring.batches)
        confirmed = wiring.sinks.confirmed(self.partition)
        staged = self.stage_commit(wiring.changelog_topic, batch, confirmed)
        return PreparedCommit(self.input_next, "", time.monotonic(), staged)

    def committed(self, result: Committed, prepared: PreparedCommit) -> None:
        """The commit is visible: the local store, then the row sinks, take it."""
        failpoints.reach("stateful-after-commit")
        staged: StagedCommit = prepared.staged
        # the partition's commit marker follows its last record (nobody else writes it)
        last = result.last_offsets[(self.wiring.changelog_topic, self.partition)]
        self.stored(staged, last + 2)
        failpoints.reach("stateful-before-postgres")
        self.wiring.sinks.add(self.partition, staged.changes, staged.batch)

    def release(self) -> None:
        self.local.close()
