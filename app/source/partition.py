"""One source partition this worker owns, as a task of the executor (app/commit/task.py):
its reader (where it stands and its clock), its checkpoint, and where its Kafka
outputs stood at its last commit.

`apply` turns a batch into outputs in one synchronous pass (app/source/reader.py) and
adds them to the checkpoint; the lake buffer takes the same rows. A commit carries
the outputs, the watermark marks that are due and the offset with its clock.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from app import failpoints
from app.commit.checkpoint import Committed, PartitionCheckpoint
from app.commit.task import PreparedCommit
from app.settings import Settings
from app.source.marks import Marks, clock_metadata
from app.source.outputs import OutputWriter
from app.source.reader import BatchReader, PartitionReader
from app.stats import Stats


@dataclass
class SourceWiring:
    """What every source partition hands its work to: one each per stage."""

    settings: Settings
    stats: Stats
    batch_reader: BatchReader
    outputs: OutputWriter
    marks: Marks


@dataclass
class SourcePartition:
    partition: int
    reader: PartitionReader
    checkpoint: PartitionCheckpoint
    committed_at: tuple[int, int]  # (next offset, stream time) as of its last commit
    wiring: SourceWiring

    @property
    def read_next(self) -> int:
        return self.reader.next_offset

    @property
    def committed_next(self) -> int:
        return self.committed_at[0]

    @property
    def progress(self) -> int:
        # reading again for the lake alone moves lake_from, not the commits
        return max(self.committed_at[0], self.reader.lake_from)

    def apply(self, records, now: float) -> None:
        wiring, reader = self.wiring, self.reader
        out = wiring.batch_reader.read(reader, records, int(now * 1000))
        wiring.stats.on_batch(self.partition, out.events, out.late, reader.clock)
        if out:
            wiring.outputs.write(self.partition, out, self.checkpoint)
            failpoints.reach("mid-batch")

    def tick(self, now: float) -> None:
        """A source partition's clock moves with its records only."""

    def prepare_commit(self) -> PreparedCommit | None:
        checkpoint, reader, settings = self.checkpoint, self.reader, self.wiring.settings
        committed_offset = self.committed_at[0]
        # Read again for the lake only (after a lake fence): the checkpoint holds outputs
        # up to kafka_from, so a commit at a lower offset would claim fewer records than
        # it makes visible; and the committed offset never moves back.
        if reader.next_offset < max(committed_offset, reader.kafka_from):
            return None
        mark = self.wiring.marks.due(self.partition, reader)
        if mark is not None:
            for target in range(settings.partitions):
                checkpoint.add(settings.internal_topic, target, [(None, mark)])
        if not checkpoint.pending and committed_offset == reader.next_offset:
            return None
        stream_time = reader.clock.stream_time
        return PreparedCommit(
            reader.next_offset, clock_metadata(stream_time), time.monotonic(), stream_time
        )

    def committed(self, result: Committed, prepared: PreparedCommit) -> None:
        self.committed_at = (prepared.next_offset, prepared.staged)
        if result.records:
            self.wiring.outputs.health.succeeded(
                result.records, time.monotonic() - prepared.started
            )
        now_ms = time.time() * 1000
        self.wiring.stats.latency.observe_ms(now_ms - t for t in self.reader.pending_timestamps)
        self.reader.pending_timestamps = []

    def release(self) -> None:
        """Nothing of its own to release: the lake buffer is the stage's."""
