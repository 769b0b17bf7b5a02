"""Rows waiting for the PostgreSQL sink, by user-keyed partition."""

from __future__ import annotations

from tables.aggregator import Changes


class PendingRows:
    """Latest absolute value per row key, merged across batches until written."""

    def __init__(self) -> None:
        self.page_views: dict[tuple[int, str, int], int] = {}
        self.active: dict[tuple[int, int], int] = {}
        self.sessions: dict[tuple[str, int], tuple] = {}
        self.batches: dict[int, int] = {}  # partition -> newest merge batch included
        # partition -> the consumer-group generation its rows were made under
        self.generations: dict[int, int] = {}

    def add(self, part: int, changes: Changes, batch: int, generation: int = 0) -> None:
        self.batches[part] = max(batch, self.batches.get(part, 0))
        self.generations[part] = generation
        for (start, url), count in changes.page_views.items():
            self.page_views[(start, url, part)] = count
        for start, count in changes.active_users.items():
            self.active[(start, part)] = count
        for key, row in changes.sessions.items():
            self.sessions[key] = (row.user_id, row.start, row.end, row.duration_s, row.status, part)

    def drop_partitions(self, parts: set[int]) -> None:
        """Forget rows of partitions this worker no longer owns: their new owner re-upserts
        everything its restored state holds, and these may be older than its rows."""
        self.page_views = {k: v for k, v in self.page_views.items() if k[2] not in parts}
        self.active = {k: v for k, v in self.active.items() if k[1] not in parts}
        self.sessions = {k: v for k, v in self.sessions.items() if v[5] not in parts}
        for part in parts:
            self.batches.pop(part, None)
            self.generations.pop(part, None)

    def __len__(self) -> int:
        return len(self.page_views) + len(self.active) + len(self.sessions)

    def merge_back(self, newer: PendingRows) -> None:
        """Put an unwritten batch back under anything that arrived after it."""
        for part, batch in newer.batches.items():
            self.batches[part] = max(batch, self.batches.get(part, 0))
        self.generations.update(newer.generations)
        for mine, theirs in (
            (self.page_views, newer.page_views),
            (self.active, newer.active),
            (self.sessions, newer.sessions),
        ):
            merged = {**mine, **theirs}
            mine.clear()
            mine.update(merged)
