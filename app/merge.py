"""The user-keyed stage: feed aggregators, persist their state, hand rows to PostgreSQL.

Each partition of the user-keyed topic has one PartitionAggregator in memory; its
RocksDB tables (with Kafka changelogs) are the durable copy, written once per key
per batch and read back when the partition is assigned.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import defaultdict

import orjson
from faust.streams import _current_event

from app.ingest import EVENTS
from tables.aggregator import Changes, PartitionAggregator, UserState
from tables.sessions import OpenSession

log = logging.getLogger(__name__)


class MergeProcessor:
    def __init__(self, settings, clock_table, windows_table, users_table, sink) -> None:
        self.settings = settings
        self.clock_table = clock_table
        self.windows_table = windows_table
        self.users_table = users_table
        self.sink = sink
        self.parts: dict[int, PartitionAggregator] = {}

    # -- partitions ----------------------------------------------------------

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.parts.pop(partition, None)

    def part(self, partition: int) -> PartitionAggregator:
        agg = self.parts.get(partition)
        if agg is None:
            agg = self.parts[partition] = self._load(partition)
            self.sink.add(partition, agg.open_rows())
        return agg

    def _load(self, partition: int) -> PartitionAggregator:
        agg = PartitionAggregator(self.settings.session_timeout_ms)
        prefix = f"{partition}|".encode()
        raw = self.clock_table.get(prefix + b"clock")
        if raw:
            saved = orjson.loads(raw)
            agg.clock.sources = saved["n"]
            agg.clock.value = saved["v"]
            for source, (watermark, idle) in saved["m"].items():
                agg.clock.update(int(source), watermark, idle, saved["n"], time.monotonic())
            agg.clock.value = max(agg.clock.value, saved["v"])
            agg.applied = {int(k): v for k, v in saved["a"].items()}
            agg.late_at_merge = saved.get("late", 0)
            agg._last_prune = agg.clock.value
        for key, value in self.windows_table.items():
            if key.startswith(prefix):
                parts = key.decode().split("|", 3)
                if parts[1] == "pv":
                    agg.page_views[(int(parts[2]), parts[3])] = orjson.loads(value)
                else:
                    agg.active[int(parts[2])] = orjson.loads(value)
        for key, value in self.users_table.items():
            if key.startswith(prefix):
                minutes, session, pending = orjson.loads(value)
                agg.restore_user(
                    key[len(prefix) :].decode(),
                    UserState(
                        minutes,
                        OpenSession(*session) if session else None,
                        [tuple(p) for p in pending],
                    ),
                )
        if raw:
            log.info(
                "merge: partition %d restored at watermark %d with %d users",
                partition,
                agg.watermark,
                len(agg.users),
            )
        return agg

    # -- records -------------------------------------------------------------

    async def handle(self, events: list) -> None:
        wall = time.monotonic()
        by_partition: dict[int, list] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        for partition, part_events in by_partition.items():
            agg = self.part(partition)
            add = agg.add
            for event in part_events:
                rec = orjson.loads(event.message.value)
                if rec[0] == EVENTS:
                    for source, offset, t_ms, user_id, event_type, page_url in rec[1]:
                        add(source, offset, t_ms, user_id, event_type, page_url)
                else:
                    agg.mark(rec[1], rec[3], rec[4], rec[2], wall)
            changes = agg.take_changes()
            self._persist(partition, agg, changes, part_events[-1])
            self.sink.add(partition, changes)

    def _persist(self, partition: int, agg: PartitionAggregator, changes: Changes, event) -> None:
        """Write changed keys to the tables, in the context of one of the partition's events."""
        token = _current_event.set(weakref.ref(event))
        try:
            p = f"{partition}|"
            windows = self.windows_table
            for (start, url), count in changes.page_views.items():
                if (start, url) in agg.page_views:
                    windows[f"{p}pv|{start}|{url}".encode()] = orjson.dumps(count)
            for start, count in changes.active_users.items():
                if start in agg.active:
                    windows[f"{p}au|{start}".encode()] = orjson.dumps(count)
            for start, url in changes.dropped_page_views:
                windows.pop(f"{p}pv|{start}|{url}".encode(), None)
            for start in changes.dropped_active:
                windows.pop(f"{p}au|{start}".encode(), None)
            users = self.users_table
            for user_id in changes.users:
                user = agg.users.get(user_id)
                if user is not None:
                    session = [user.session.start, user.session.last] if user.session else None
                    users[f"{p}{user_id}".encode()] = orjson.dumps(
                        [user.minutes, session, user.pending]
                    )
            for user_id in changes.dropped_users:
                users.pop(f"{p}{user_id}".encode(), None)
            if changes.clock:
                marks = {s: [m.watermark, m.idle] for s, m in agg.clock.marks.items()}
                self.clock_table[f"{p}clock".encode()] = orjson.dumps(
                    {
                        "n": agg.clock.sources,
                        "v": agg.clock.value,
                        "m": marks,
                        "a": agg.applied,
                        "late": agg.late_at_merge,
                    },
                    option=orjson.OPT_NON_STR_KEYS,
                )
        finally:
            _current_event.reset(token)
