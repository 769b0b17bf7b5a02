"""The user-keyed stage: feed aggregators, persist their state, hand rows to PostgreSQL.

Each partition of the user-keyed topic has one PartitionAggregator in memory. Its
durable copy is one Faust table written as all-or-nothing batches (store.py),
once per changed key per batch, and read back when the partition is assigned; the
batch's commit record says which input offset the state covers, and later records
are applied again. Rows that became final wait in the partition's outbox (outbox.py),
persisted with that state, until PostgreSQL has them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import defaultdict

from app.stateful.outbox import Outbox, split_outbox
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
        self.generation = 0  # the consumer group's, of the last assignment
        self.rebalances = 0
        self.store = BatchStore(state_table)
        self.sink = sink  # app.sinks.postgres.PostgresSink
        self.parts: dict[int, PartitionAggregator] = {}
        self.outboxes: dict[int, Outbox] = {}
        self.input_offset: dict[int, int] = {}
        # Numbers of the batches handed to the sink, which confirms them in order: one
        # sequence for every partition and ownership, so a number confirms only what
        # was handed over under it (a confirmation from before a revoke, say, cannot
        # release rows handed over after the partition came back).
        self._sink_batches = itertools.count(1)

    # -- partitions ----------------------------------------------------------

    def assign(self, partitions: set[int], generation: int) -> None:
        """`generation`: the consumer group's, under which the partitions are ours."""
        self.owned = set(partitions)
        self.generation = generation
        self.rebalances += 1
        self.sink.assign(partitions, generation)
        self.guard.reset()

    def revoke(self, partitions: set[int]) -> None:
        self.owned = set()
        self.rebalances += 1
        self.sink.revoke(partitions)
        for partition in partitions:
            self.parts.pop(partition, None)
            self.outboxes.pop(partition, None)
            self.input_offset.pop(partition, None)
            self.store.forget(partition)

    @staticmethod
    def _leave(events: list) -> None:
        """Records this worker does not apply: never acknowledged, so Faust cannot
        commit past them (after a rebalance it would, before seeking to the committed
        offset); the partition's owner reads them again from the committed offset."""
        for event in events:
            event.message.incref()

    async def _load(self, partitions: list[int]) -> bool:
        """Restore the state of `partitions`, reading it in a thread (a partition holds
        every user's state: seconds of work at 100k users). False when a rebalance
        ran meanwhile: then what was read is not installed."""
        rebalances = self.rebalances
        scans = [self.store.prepare(partition) for partition in partitions]
        restored = await asyncio.gather(*(asyncio.to_thread(self._restore, s) for s in scans))
        if rebalances != self.rebalances:
            return False
        for scan, (loaded, agg, box) in zip(scans, restored, strict=True):
            partition = scan.partition
            self.store.adopt(partition, loaded)
            self.store.own(partition, self.generation)
            self.parts[partition], self.outboxes[partition] = agg, box
            self.input_offset[partition] = -1 if loaded.commit is None else loaded.commit["o"]
            # everything it holds goes out again
            batch = next(self._sink_batches)
            self.sink.add(partition, agg.open_rows(), batch)
            self.sink.add(partition, box.resend(batch), batch)
            if loaded.commit is not None:
                log.info(
                    "merge: partition %d restored at input offset %d, watermark %d, %d users, "
                    "%d final rows not yet in PostgreSQL, %d events late at merge so far",
                    partition,
                    loaded.commit["o"],
                    agg.watermark,
                    len(agg.users),
                    len(box),
                    agg.late_at_merge,
                )
        return True

    def _restore(self, scan) -> tuple:
        loaded = BatchStore.read(scan)
        held, state = split_outbox(loaded.values)
        agg = PartitionAggregator(self.settings.session_timeout_ms)
        agg.restore(loaded.commit, state, time.monotonic())
        box = Outbox()
        box.restore(held)
        return loaded, agg, box

    # -- records -------------------------------------------------------------

    async def handle(self, events: list) -> None:
        by_partition: dict[int, list] = defaultdict(list)
        for event in events:
            by_partition[event.message.partition].append(event)
        # Local state may run at most one batch ahead of the changelog (store.py).
        # Awaited before any state changes: a rebalance may run meanwhile.
        await self.store.landed(by_partition)
        new = [p for p in by_partition if p not in self.parts and self._owns(p)]
        if new and not await self._load(new):
            log.info(
                "merge: a rebalance ran while state was restored; %d records in hand are "
                "left to the partitions' owners",
                len(events),
            )
            self._leave(events)
            return
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
        for partition, part_events in by_partition.items():
            if not self._owns(partition) or partition not in self.parts:
                log.info(
                    "merge: left %d records of partition %d to its new owner",
                    len(part_events),
                    partition,
                )
                self._leave(part_events)
                continue
            self._apply(partition, part_events, wall)

    def _owns(self, partition: int) -> bool:
        return self.owned is None or partition in self.owned

    def _apply(self, partition: int, events: list, wall: float) -> None:
        agg = self.parts[partition]
        done_through = self.input_offset[partition]
        add = agg.add
        for event in events:
            if event.message.offset <= done_through:
                continue
            record = decode(event.message.value)
            if type(record) is WatermarkMark:
                agg.mark(record.source, record.watermark, record.idle, record.sources, wall)
            else:
                for forwarded in record:
                    add(*forwarded)
        last = events[-1]
        if last.message.offset <= done_through:
            return
        self.input_offset[partition] = last.message.offset
        batch = next(self._sink_batches)
        changes = agg.take_changes()
        box = self.outboxes[partition]
        box.release(self.sink.confirmed.get(partition, 0))
        box.hold(changes, batch)
        writes = agg.snapshot(changes)
        writes.update(box.snapshot())
        self.store.write(partition, last, writes, agg.checkpoint(last.message.offset))
        self._acknowledge_when_landed(events, self.store.last_send(partition))
        self.sink.add(partition, changes, batch)

    @staticmethod
    def _acknowledge_when_landed(events: list, sent) -> None:
        """Acknowledge `events` once the changelog holds their batch.

        Faust commits the offsets of acknowledged records, and a table's changelog
        records are sent apart from those commits: a worker killed between the two
        would leave offsets committed past state that never reached the changelog.
        If the send fails the records stay unacknowledged and are read again.
        """
        for event in events:
            event.message.incref()

        def landed(future) -> None:
            if not future.cancelled() and future.exception() is None:
                for event in events:
                    event.ack()

        sent.add_done_callback(landed)
