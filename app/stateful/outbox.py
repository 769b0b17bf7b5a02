"""Final rows of one user-keyed partition, kept in state until every row sink has them.

A window's final value and an ended session's row are written to PostgreSQL once,
after the aggregator let go of them (a closed window goes RETAIN_CLOSED_MS past its
end, an ended session at once). If the worker dies before that write, the rows must
still be in the restored state, so they wait here, persisted in the same state batch
as the change that made them final, until every row sink confirms the batch that
carried them (`RowSinks.confirmed`, app/sinks/contract.py). After a restore they all
go out again.

Its keys live beside the aggregator's in the state table, under `o|`:
`o|pv|<start>|<url>` (count), `o|au|<start>` (count), `o|s|<user>|<start>` ([end, status]).
"""

from __future__ import annotations

from typing import Any

from tables.aggregator import Changes
from tables.sessions import ACTIVE, SessionRow

PREFIX = "o|"

Entry = tuple  # ("pv", start, url) | ("au", start) | ("s", user_id, start)


def _name(entry: Entry) -> str:
    if len(entry) == 2:
        return f"{PREFIX}{entry[0]}|{entry[1]}"
    return f"{PREFIX}{entry[0]}|{entry[1]}|{entry[2]}"


class Outbox:
    def __init__(self) -> None:
        self._rows: dict[Entry, Any] = {}  # entry -> its final value
        self._batch: dict[Entry, int] = {}  # entry -> the batch that last carried it
        # batch -> entries it carried, oldest batch first (batch numbers only grow), so
        # a release touches only what it releases, even after a long PostgreSQL outage
        self._carried: dict[int, list[Entry]] = {}
        self._writes: dict[str, Any] = {}  # state keys changed since `snapshot`

    def __len__(self) -> int:
        return len(self._rows)

    def hold(self, changes: Changes, batch: int) -> None:
        """Keep the rows `changes` made final until `batch` is confirmed."""
        for key in changes.final_page_views:
            self._put(("pv", *key), changes.page_views[key], batch)
        for start in changes.final_active:
            self._put(("au", start), changes.active_users[start], batch)
        for (user_id, start), row in changes.sessions.items():
            if row.status != ACTIVE:
                self._put(("s", user_id, start), [row.end, row.status], batch)

    def _put(self, entry: Entry, value: Any, batch: int) -> None:
        self._rows[entry] = value
        self._writes[_name(entry)] = value
        self._carry(entry, batch)

    def _carry(self, entry: Entry, batch: int) -> None:
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
                    self._writes[_name(entry)] = None

    def snapshot(self) -> dict[str, Any]:
        """The state keys changed since the last snapshot (None: deleted)."""
        writes, self._writes = self._writes, {}
        return writes

    def restore(self, values: dict[str, Any]) -> None:
        """Load the `o|` keys of `values` (the state table's live keys)."""
        for name, value in values.items():
            if not name.startswith(PREFIX):
                continue
            kind, _, rest = name[len(PREFIX) :].partition("|")
            if kind == "pv":
                start, _, url = rest.partition("|")
                entry: Entry = ("pv", int(start), url)
            elif kind == "au":
                entry = ("au", int(rest))
            elif kind == "s":
                user_id, _, start = rest.rpartition("|")
                entry = ("s", user_id, int(start))
            else:
                raise ValueError(f"not an outbox key: {name!r}")
            self._rows[entry] = value
            self._carry(entry, 0)

    def resend(self, batch: int) -> Changes:
        """Every row held, as carried again by `batch` (after a restore)."""
        rows = Changes()
        self._carried.clear()
        for entry, value in self._rows.items():
            self._carry(entry, batch)
            if entry[0] == "pv":
                rows.page_views[entry[1:]] = value
            elif entry[0] == "au":
                rows.active_users[entry[1]] = value
            else:
                _, user_id, start = entry
                rows.sessions[(user_id, start)] = SessionRow(user_id, start, *value)
        return rows


def split_outbox(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the outbox's keys, the aggregator's keys) of a state table's live keys."""
    outbox = {k: v for k, v in values.items() if k.startswith(PREFIX)}
    return outbox, {k: v for k, v in values.items() if not k.startswith(PREFIX)}
