"""Final rows of one user-keyed partition, kept in state until every row sink has them.

A window's final value and an ended session's row are written to PostgreSQL once,
after the aggregator let go of them (a closed window goes RETAIN_CLOSED_MS past its
end, an ended session at once). If the worker dies before that write, the rows must
still be in the restored state, so they wait here, persisted in the same state batch
as the change that made them final, until every row sink confirms the batch that
carried them (`RowSinks.confirmed`, app/sinks/contract.py). After a restore they all
go out again.

Its keys live beside the aggregator's in the state table, under `o|`: a window's row
as the aggregator names it (`o|pv|<start>|<url>`, `o|au|<start>`: the count), and
`o|s|<user>|<start>` ([end, status]) for a session. An entry is its state key.
"""

from __future__ import annotations

from typing import Any

from tables.aggregator import Changes, empty_rows
from tables.sessions import ACTIVE, SessionRow
from tables.windows import WINDOWS, WindowSpec

PREFIX = "o|"


class Outbox:
    def __init__(self, windows: tuple[WindowSpec, ...] = WINDOWS) -> None:
        self._windows = windows
        self._by_prefix = {spec.prefix: spec for spec in windows}
        self._rows: dict[str, Any] = {}  # entry -> its final value
        self._batch: dict[str, int] = {}  # entry -> the batch that last carried it
        # batch -> entries it carried, oldest batch first (batch numbers only grow), so
        # a release touches only what it releases, even after a long PostgreSQL outage
        self._carried: dict[int, list[str]] = {}
        self._writes: dict[str, Any] = {}  # state keys changed since `snapshot`

    def __len__(self) -> int:
        return len(self._rows)

    def hold(self, changes: Changes, batch: int) -> None:
        """Keep the rows `changes` made final until `batch` is confirmed."""
        for spec in self._windows:
            window = changes.windows[spec.name]
            for key in window.final:
                self._put(PREFIX + spec.state_key(key), window.rows[key], batch)
        for (user_id, start), row in changes.sessions.items():
            if row.status != ACTIVE:
                self._put(f"{PREFIX}s|{user_id}|{start}", [row.end, row.status], batch)

    def _put(self, entry: str, value: Any, batch: int) -> None:
        self._rows[entry] = value
        self._writes[entry] = value
        self._carry(entry, batch)

    def _carry(self, entry: str, batch: int) -> None:
        self._batch[entry] = batch
        self._carried.setdefault(batch, []).append(entry)

    def release(self, confirmed: int) -> None:
        """Forget what batches up to `confirmed` carried: PostgreSQL has it."""
        while self._carried:
            batch = next(iter(self._carried))
            if batch > confirmed:
                return
            for entry in self._carried.pop(batch):
                if self._batch.get(entry) == batch:  # not carried again since
                    del self._rows[entry]
                    del self._batch[entry]
                    self._writes[entry] = None

    def snapshot(self) -> dict[str, Any]:
        """The state keys changed since the last snapshot (None: deleted)."""
        writes, self._writes = self._writes, {}
        return writes

    def restore(self, values: dict[str, Any]) -> None:
        """Load the `o|` keys of `values` (the state table's live keys)."""
        for name, value in values.items():
            if not name.startswith(PREFIX):
                continue
            self._parse(name)  # refuses a key that is not the outbox's
            self._rows[name] = value
            self._carry(name, 0)

    def _parse(self, entry: str) -> tuple[WindowSpec | None, Any]:
        """(its window, or None for a session; the row's key)"""
        kind, _, rest = entry[len(PREFIX) :].partition("|")
        if kind == "s":
            user_id, _, start = rest.rpartition("|")
            return None, (user_id, int(start))
        spec = self._by_prefix.get(kind)
        if spec is None:
            raise ValueError(f"not an outbox key: {entry!r}")
        return spec, spec.parse_key(rest)

    def resend(self, batch: int) -> Changes:
        """Every row held, as carried again by `batch` (after a restore)."""
        rows = Changes(windows=empty_rows(self._windows))
        self._carried.clear()
        for entry, value in self._rows.items():
            self._carry(entry, batch)
            spec, key = self._parse(entry)
            if spec is None:
                rows.sessions[key] = SessionRow(*key, *value)
            else:
                rows.windows[spec.name].rows[key] = value
        return rows


def split_outbox(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the outbox's keys, the aggregator's keys) of a state table's live keys."""
    outbox = {k: v for k, v in values.items() if k.startswith(PREFIX)}
    return outbox, {k: v for k, v in values.items() if not k.startswith(PREFIX)}
