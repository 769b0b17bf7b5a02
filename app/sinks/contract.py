"""The sink contract: what the Kafka outputs, the lake and PostgreSQL each offer.

Every sink
- is handed rows per partition it owns and makes them durable on its own schedule,
  one all-or-nothing write at a time: a Kafka transaction per source partition every
  COMMIT_INTERVAL (app/commit/checkpoint.py), a Delta commit every LAKE_FLUSH
  (app/source/lake_flusher.py), a PostgreSQL transaction every SINK_FLUSH
  (app/sinks/postgres.py);
- knows where each partition stands in it, so that after a crash or a rebalance
  the partition's new owner fills in only what this sink lacks: the committed source
  offset, the lake's application transactions, the merge batch PostgreSQL confirmed;
- gives up what it holds for partitions that moved, since their new owner writes them
  again from that position;
- keeps what fails for want of its server and retries it with `app.throttle.Backoff`,
  dropping nothing; sets aside, with its reason, a row the server refuses as data
  (app/sinks/rejects.py; docs/contract.md, "No record stops a sink");
- says how it is doing in one shape, `SinkHealth`, which `/api/stats`, `/api/health`
  and `/metrics` read alike.

`Sink` is what every sink offers. The source stage reads each partition from the
lowest `positions` of its sinks (the Kafka outputs, the lake); the stateful stage hands
its window and session rows to every `RowSink` and releases a row from its outbox once
each of them confirms it (`RowSinks`): a new row sink is a class and a line in
`app.worker.build`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from tables.aggregator import Changes


@dataclass
class SinkHealth:
    """How a sink's writes are going. Times are wall-clock epoch seconds."""

    target: str  # where it writes, secrets masked
    rows_written: int = 0
    writes: int = 0  # successful all-or-nothing writes (transactions, commits)
    errors: int = 0  # failed attempts, each retried
    consecutive_errors: int = 0
    failing_since: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    last_write_s: float = 0.0  # how long the last successful write took

    @property
    def ok(self) -> bool:
        return self.consecutive_errors == 0

    def succeeded(self, rows: int, seconds: float) -> float | None:
        """One write went through; returns how long the outage it ends lasted, if any."""
        self.rows_written += rows
        self.writes += 1
        self.last_write_s = seconds
        return self.reachable()

    def reachable(self) -> float | None:
        """Connected again (or written); returns the outage's length, if any. The last
        error stays: it is what the last outage was."""
        now = time.time()
        outage = None if self.failing_since is None else now - self.failing_since
        self.consecutive_errors = 0
        self.failing_since = None
        self.last_success_at = now
        return outage

    def failed(self, error: str) -> None:
        """One attempt failed (`error`: the exception's type and redacted text)."""
        now = time.time()
        self.errors += 1
        self.consecutive_errors += 1
        self.last_error = error
        self.last_error_at = now
        if self.failing_since is None:
            self.failing_since = now


class Sink(Protocol):
    name: str  # "kafka", "lake", "postgres"
    health: SinkHealth

    def pending_rows(self) -> int:
        """Rows handed to the sink and not durable in it yet."""
        ...


class RowSink(Sink, Protocol):
    """A sink of the stateful stage's rows: it takes each commit's rows under that
    commit's batch number and confirms, per partition, the highest batch it holds
    durably (its position); rows of a partition that moved away are given up."""

    def add(self, partition: int, changes: Changes, batch: int) -> None: ...

    def confirmed(self, partition: int) -> int:
        """The highest batch number of `partition` this sink holds durably (0: none)."""
        ...

    def assign(self, partitions: set[int], generation: int) -> None: ...

    def revoke(self, partitions: set[int]) -> None: ...


class RowSinks(list):
    """The stateful stage's row sinks, as one: rows go to each, and a batch is
    confirmed once every one of them confirms it."""

    def add(self, partition: int, changes: Changes, batch: int) -> None:
        for sink in self:
            sink.add(partition, changes, batch)

    def confirmed(self, partition: int) -> int:
        return min((sink.confirmed(partition) for sink in self), default=0)

    def assign(self, partitions: set[int], generation: int) -> None:
        for sink in self:
            sink.assign(partitions, generation)

    def revoke(self, partitions: set[int]) -> None:
        for sink in self:
            sink.revoke(partitions)
