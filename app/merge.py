"""The user-keyed stage: feed aggregators, persist their state, hand rows to PostgreSQL.

Each partition of the user-keyed topic has one PartitionAggregator in memory. Its
durable copy is one Faust table written as all-or-nothing batches (app/batch_store.py),
once per changed key per batch, and read back when the partition is assigned; the
batch's commit record says which input offset the state covers, and later records
are applied again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import orjson

from app.batch_store import BatchStore
from app.ingest import EVENTS
from tables.aggregator import Changes, PartitionAggregator, UserState
from tables.sessions import OpenSession

log = logging.getLogger(__name__)


class MergeProcessor:
    def __init__(self, settings, state_table, sink) -> None:
        self.settings = settings
        # Partitions this worker owns, as of the last rebalance signal: a batch taken
        # before a rebalance may still hold records of partitions that have moved, and
        # between revocation and assignment nothing is ours.
        self.owned: set[int] | None = None
        self.store = BatchStore(state_table)
        self.sink = sink
        self.parts: dict[int, PartitionAggregator] = {}
        self.input_offset: dict[int, int] = {}
        self.replayed = 0

    # -- partitions ----------------------------------------------------------

    def assign(self, partitions: set[int]) -> None:
        self.owned = set(partitions)

    def revoke(self, partitions: set[int]) -> None:
        self.owned = set()
        self.sink.revoke(partitions)
        for partition in partitions:
            self.parts.pop(partition, None)
            self.input_offset.pop(partition, None)
            self.store.forget(partition)

    def part(self, partition: int) -> PartitionAggregator:
        agg = self.parts.get(partition)
        if agg is None:
            agg = self.parts[partition] = self._load(partition)
            self.sink.add(partition, agg.open_rows(), self.store.seq[partition] + 1)
        return agg

    def _load(self, partition: int) -> PartitionAggregator:
        agg = PartitionAggregator(self.settings.session_timeout_ms)
        commit, values = self.store.load(partition)
        self.input_offset[partition] = -1
        if commit is not None:
            self.input_offset[partition] = commit["o"]
            agg.clock.sources = commit["n"]
            for source, (watermark, idle) in commit["m"].items():
                agg.clock.update(int(source), watermark, idle, commit["n"], time.monotonic())
            agg.clock.value = max(agg.clock.value, commit["v"])
            agg.applied = {int(k): v for k, v in commit["a"].items()}
            agg.late_at_merge = commit.get("late", 0)
            agg._last_prune = agg.clock.value
        for name, value in values.items():
            kind, _, rest = name.partition("|")
            if kind == "pv":
                start, _, url = rest.partition("|")
                agg.page_views[(int(start), url)] = value
            elif kind == "au":
                agg.active[int(rest)] = value
            elif kind == "u":
                minutes, session, pending, closed = value
                agg.restore_user(
                    rest,
                    UserState(
                        minutes,
                        OpenSession(*session) if session else None,
                        [tuple(p) for p in pending],
                        closed,
                    ),
                )
        agg.confirmed = 0
        agg.restored(self.store.seq[partition] + 1)
        if commit is not None:
            log.info(
                "merge: partition %d restored at input offset %d, watermark %d, %d users",
                partition,
                commit["o"],
                agg.watermark,
                len(agg.users),
            )
        return agg

    # -- records -------------------------------------------------------------

    async def handle(self, events: list) -> None:
        by_partition: dict[int, list] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        # Local state may run at most one batch ahead of the changelog (app/batch_store.py).
        # Awaited before any state changes: a rebalance may run meanwhile.
        await self.store.landed(by_partition)
        wall = time.monotonic()
        owned = self.owned
        for partition, part_events in by_partition.items():
            if owned is not None and partition not in owned:
                log.info(
                    "merge: dropped %d records of partition %d, no longer ours",
                    len(part_events),
                    partition,
                )
                continue
            agg = self.part(partition)
            agg.batch = self.store.seq[partition] + 1
            agg.confirmed = self.sink.confirmed.get(partition, 0)
            done_through = self.input_offset[partition]
            first = part_events[0].message.offset
            if first > done_through + 1 and done_through >= 0:
                log.error(
                    "merge: partition %d jumps from offset %d to %d: the state misses records",
                    partition,
                    done_through,
                    first,
                )
            add = agg.add
            for event in part_events:
                if event.message.offset <= done_through:
                    self.replayed += 1
                    continue
                rec = orjson.loads(event.message.value)
                if rec[0] == EVENTS:
                    for source, offset, t_ms, user_id, event_type, page_url in rec[1]:
                        add(source, offset, t_ms, user_id, event_type, page_url)
                else:
                    agg.mark(rec[1], rec[3], rec[4], rec[2], wall)
            last = part_events[-1]
            if last.message.offset <= done_through:
                continue
            self.input_offset[partition] = last.message.offset
            changes = agg.take_changes()
            self.store.write(
                partition, last, self._serialise(agg, changes), self._commit(partition, agg)
            )
            self.sink.add(partition, changes, agg.batch)

    def _commit(self, partition: int, agg: PartitionAggregator) -> dict:
        return {
            "o": self.input_offset[partition],
            "n": agg.clock.sources,
            "v": agg.clock.value,
            "m": {s: [m.watermark, m.idle] for s, m in agg.clock.marks.items()},
            "a": agg.applied,
            "late": agg.late_at_merge,
        }

    @staticmethod
    def _serialise(agg: PartitionAggregator, changes: Changes) -> dict:
        out: dict = {}
        for key in changes.page_views:
            if key in agg.page_views:
                out[f"pv|{key[0]}|{key[1]}"] = agg.page_views[key]
        for start in changes.active_users:
            if start in agg.active:
                out[f"au|{start}"] = agg.active[start]
        for start, url in changes.dropped_page_views:
            out[f"pv|{start}|{url}"] = None
        for start in changes.dropped_active:
            out[f"au|{start}"] = None
        for user_id in changes.users:
            user = agg.users.get(user_id)
            if user is not None:
                session = [user.session.start, user.session.last] if user.session else None
                out[f"u|{user_id}"] = [user.minutes, session, user.pending, user.closed]
        for user_id in changes.dropped_users:
            out[f"u|{user_id}"] = None
        return out
