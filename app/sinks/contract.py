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

The first three differ in their arguments (a transaction, a lake buffer, a merge
batch) and are the stages' business; `Sink` below is the part everyone shares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


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
