"""Rows waiting for the PostgreSQL sink, by user-keyed partition."""

from __future__ import annotations

from tables.aggregator import Changes


class PendingRows:
    """Latest absolute value per row key, merged across batches until written."""

    def __init__(self) -> None:
        # window name -> (start, [url,] part) -> count; the partition is last in the key
        self.windows: dict[str, dict[tuple, int]] = {}
        self.sessions: dict[tuple[str, int], tuple] = {}
        self.batches: dict[int, int] = {}  # partition -> newest merge batch included
        # partition -> the consumer-group generation its rows were made under
        self.generations: dict[int, int] = {}

    def add(self, part: int, changes: Changes, batch: int, generation: int = 0) -> None:
        self.batches[part] = max(batch, self.batches.get(part, 0))
        self.generations[part] = generation
        for name, window in changes.windows.items():
            if not window.rows:
                continue
            rows = self.windows.setdefault(name, {})
            for key, count in window.rows.items():
                # a window's key: (start, url) per page, start for distinct users
                rows[(*key, part) if type(key) is tuple else (key, part)] = count
        for key, row in changes.sessions.items():
            self.sessions[key] = (row.user_id, row.start, row.end, row.duration_s, row.status, part)

    def drop_partitions(self, parts: set[int]) -> None:
        """Forget rows of partitions this worker no longer owns: their new owner re-upserts
        everything its restored state holds, and these may be older than its rows."""
        self.windows = {
            name: {k: v for k, v in rows.items() if k[-1] not in parts}
            for name, rows in self.windows.items()
        }
        self.sessions = {k: v for k, v in self.sessions.items() if v[5] not in parts}
        for part in parts:
            self.batches.pop(part, None)
            self.generations.pop(part, None)

    def __len__(self) -> int:
        return sum(map(len, self.windows.values())) + len(self.sessions)

    def merge_back(self, newer: PendingRows) -> None:
        """Put an unwritten batch back under anything that arrived after it."""
        for part, batch in newer.batches.items():
            self.batches[part] = max(batch, self.batches.get(part, 0))
        self.generations.update(newer.generations)
        for name, theirs in newer.windows.items():
            self.windows[name] = {**self.windows.get(name, {}), **theirs}
        self.sessions = {**self.sessions, **newer.sessions}
