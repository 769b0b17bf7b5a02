"""The task model both stages share: one task per input partition, as Kafka Streams'
StreamTask. Its lifecycle:

- open: its stage fences the previous owner (a new `PartitionCheckpoint`), restores
  what the partition needs (a clock, a state) and positions the consumer at `read_next`;
- `apply` a fetched batch, `tick` every turn;
- `prepare_commit`: add what the partition owes its outputs to its checkpoint and say
  the input offset it commits (None: nothing to commit);
- the checkpoint commits (app/commit/checkpoint.py), then `committed` hands what
  became visible on (the local store, the sinks);
- `release` its local resources, and its checkpoint closes.

The executor (app/commit/stage.py) runs the same loop, commit, rebalance and stop for
every task, whatever the stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from app.commit.checkpoint import Committed, PartitionCheckpoint


@dataclass
class PreparedCommit:
    """What one commit of a task carries, for after it is visible."""

    next_offset: int  # the input offset committed with it
    metadata: str = ""  # stored with that offset
    started: float = 0.0  # monotonic time it was prepared
    staged: Any = None  # the task's own record of what it staged


class PartitionTask(Protocol):
    partition: int
    checkpoint: PartitionCheckpoint

    @property
    def read_next(self) -> int:
        """The next input offset to read: the consumer is positioned here."""
        ...

    @property
    def committed_next(self) -> int:
        """The input offset as of the last commit."""
        ...

    @property
    def progress(self) -> int:
        """Moves when the task does useful work (for the progress watch)."""
        ...

    def apply(self, records, now: float) -> None: ...

    def tick(self, now: float) -> None: ...

    def prepare_commit(self) -> PreparedCommit | None: ...

    def committed(self, result: Committed, prepared: PreparedCommit) -> None: ...

    def release(self) -> None:
        """Its local resources released (its checkpoint is closed by the executor)."""
        ...
