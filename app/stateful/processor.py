"""The user-keyed stage: feed aggregators, persist their state, hand rows to PostgreSQL.

Each partition of the user-keyed topic has one PartitionAggregator in memory. Its
durable copy is one Faust table written as all-or-nothing batches (store.py),
once per changed key per batch, and read back when the partition is assigned; the
batch's commit record says which input offset the state covers, and later records
are applied again.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

from app.stateful.stall import StallGuard
from app.stateful.store import BatchStore
from app.wire import WatermarkMark, decode
from tables.aggregator import PartitionAggregator

log = logging.getLogger(__name__)


class MergeProcessor:
    def __init__(self, settings, state_table, sink, guard: StallGuard) -> None:
        self.settings = settings
        self.guard = guard
        # Partitions this worker owns, as of the last rebalance signal: a batch taken
        # before a rebalance may still hold records of partitions that have moved, and
        # between revocation and assignment nothing is ours.
        self.owned: set[int] | None = None
        self.store = BatchStore(state_table)
        self.sink = sink
        self.parts: dict[int, PartitionAggregator] = {}
        self.input_offset: dict[int, int] = {}

    # -- partitions ----------------------------------------------------------

    def assign(self, partitions: set[int]) -> None:
        self.owned = set(partitions)
        self.guard.reset()

    def revoke(self, partitions: set[int]) -> None:
        self.owned = set()
        self.sink.revoke(partitions)
        for partition in partitions:
            self.parts.pop(partition, None)
            self.input_offset.pop(partition, None)
            self.store.forget(partition)

    @staticmethod
    def _leave(events: list) -> None:
        """Records this worker does not apply: never acknowledged, so Faust cannot
        commit past them (after a rebalance it would, before seeking to the committed
        offset); the partition's owner reads them again from the committed offset."""
        for event in events:
            event.message.incref()

    def part(self, partition: int) -> PartitionAggregator:
        agg = self.parts.get(partition)
        if agg is None:
            agg = self.parts[partition] = self._load(partition)
            self.sink.add(partition, agg.open_rows(), self.store.seq[partition] + 1)
        return agg

    def _load(self, partition: int) -> PartitionAggregator:
        agg = PartitionAggregator(self.settings.session_timeout_ms)
        commit, values = self.store.load(partition)
        self.input_offset[partition] = -1 if commit is None else commit["o"]
        agg.restore(commit, values, time.monotonic())
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
        # Local state may run at most one batch ahead of the changelog (store.py).
        # Awaited before any state changes: a rebalance may run meanwhile.
        await self.store.landed(by_partition)
        if not self.guard.alive():
            # What is in hand predates the rebalance that follows; the partitions' owners
            # (this worker again, perhaps) read it anew from the committed offsets.
            log.warning(
                "merge: this worker stood still longer than the session timeout; %d records "
                "in hand are left to the partitions' owners after the rebalance",
                len(events),
            )
            await self.guard.settled()
            self._leave(events)
            return
        wall = time.monotonic()
        owned = self.owned
        for partition, part_events in by_partition.items():
            if owned is not None and partition not in owned:
                log.info(
                    "merge: left %d records of partition %d to its new owner",
                    len(part_events),
                    partition,
                )
                self._leave(part_events)
                continue
            agg = self.part(partition)
            agg.batch = self.store.seq[partition] + 1
            agg.confirmed = self.sink.confirmed.get(partition, 0)
            done_through = self.input_offset[partition]
            add = agg.add
            for event in part_events:
                if event.message.offset <= done_through:
                    continue
                record = decode(event.message.value)
                if type(record) is WatermarkMark:
                    agg.mark(record.source, record.watermark, record.idle, record.sources, wall)
                else:
                    for forwarded in record:
                        add(*forwarded)
            last = part_events[-1]
            if last.message.offset <= done_through:
                continue
            self.input_offset[partition] = last.message.offset
            changes = agg.take_changes()
            self.store.write(
                partition, last, agg.snapshot(changes), agg.checkpoint(last.message.offset)
            )
            self.sink.add(partition, changes, agg.batch)
