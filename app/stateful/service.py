"""The stateful stage: a transactional consume-process-produce loop over the user-keyed
topic, written like the source stage and committing through the same protocol
(app/commit/checkpoint.py).

Its own aiokafka consumer (read_committed, group `<APP_ID>-stateful`) hands fetched
batches straight to each partition's aggregator (app/stateful/partition.py). Every
SINK_FLUSH (500 ms) each partition that moved commits one Kafka transaction: its changed
state keys and its position into the compacted changelog (app/stateful/changelog.py),
with its input offset. Only once that is visible does the local RocksDB take the
same records (app/stateful/state.py) and PostgreSQL the rows (app/sinks/postgres.py).

A partition is opened the same way whether it was just assigned or its commit failed:
its checkpoint first (fencing any previous owner), then its state restored from the
local store and the changelog's end (app/stateful/restore.py), then the input read
from the offset that state covers. The group's committed offset is never used to
position anything.

The executor (app/commit/stage.py) runs the loop, the commits and the rebalances, as
for the source stage.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from app import failpoints
from app.aiokafka_internals import group_generation
from app.commit.checkpoint import PartitionCheckpoint
from app.commit.stage import BatchStage
from app.kafka_clients import KafkaClients, create_topics, partition_count
from app.settings import Settings
from app.sinks.contract import RowSink, RowSinks
from app.stateful import changelog
from app.stateful.partition import StatefulWiring
from app.stateful.restore import in_thread, restore
from app.stateful.state import LocalState

log = logging.getLogger(__name__)


class StatefulStage(BatchStage):
    name = "stateful"

    def __init__(
        self,
        settings: Settings,
        sinks: list[RowSink],
        clients: KafkaClients | None = None,
        **kwargs,
    ) -> None:
        # Its commits hand rows to PostgreSQL, which they reach SINK_FLUSH after changing
        # at most; committing more often costs a transaction per partition each time.
        super().__init__(
            max(settings.commit_interval_ms, settings.sink_flush_ms),
            stuck_after_ms=settings.stuck_after_ms,
            **kwargs,
        )
        self.settings = settings
        self.sinks = RowSinks(sinks)
        self.clients = clients or KafkaClients(settings)
        self.topic = settings.internal_topic
        self.group_id = f"{settings.app_id}-stateful"
        self.changelog_topic = changelog.topic_name(settings.app_id, settings.partitions)
        self.store_dir = Path(settings.state_dir) / changelog.store_name(settings.partitions)
        self.reader = None  # restores read the changelog with it
        self.admin = None
        self.wiring = StatefulWiring(self.changelog_topic, self.sinks, itertools.count(1))
        self.restores = 0
        self.wall = time.monotonic  # what moves time on while every source is idle

    # -- lifecycle -----------------------------------------------------------

    async def on_start(self) -> None:
        settings = self.settings
        self.admin = self.clients.admin()
        await self.admin.start()
        await self._warn_of_old_state()
        await create_topics(
            self.admin,
            [
                NewTopic(self.topic, settings.partitions, settings.replication_factor),
                NewTopic(
                    self.changelog_topic,
                    settings.partitions,
                    settings.replication_factor,
                    topic_configs={"cleanup.policy": "compact"},
                ),
            ],
        )
        # A topic just created may not be in the cluster's metadata yet: a consumer that
        # subscribed then found no partitions and waited for its next metadata refresh
        # (five minutes) before reading anything (seen once in the bench).
        await partition_count(self.admin, self.topic)
        self.reader = self.clients.reader()
        await self.reader.start()
        # it commits every SINK_FLUSH: no need to fetch each record as soon as it lands
        self.consumer = self.clients.consumer(
            self.group_id, fetch_min_bytes=1 << 20, fetch_max_wait_ms=100
        )
        await self.consumer.start()
        self.consumer.subscribe([self.topic], listener=self.listener())
        self.start_loop()

    async def _warn_of_old_state(self) -> None:
        """Earlier versions kept this state in a Faust table or in a changelog of
        another format: say what changes."""
        topics = await self.admin.list_topics()
        old = changelog.earlier_state_topics(self.settings.app_id, topics, self.changelog_topic)
        if old and self.changelog_topic not in topics:
            log.warning(
                "stateful: %s holds the state of an earlier version; this one keeps it in "
                "%s, built anew from the user-keyed topic's earliest offset: windows older "
                "than that topic's retention keep their PostgreSQL rows as they are. To "
                "start over instead, stop every worker and delete %s, %s and the "
                "PostgreSQL tables. %s can go once this version runs.",
                old[0], self.changelog_topic, self.topic, self.changelog_topic, old[0],
            )  # fmt: skip

    def now(self) -> float:
        return self.wall()

    def closers(self) -> list:
        closers = []
        if self.reader is not None:  # a consumer: it stops
            closers.append(self.reader.stop)
        if self.admin is not None:
            closers.append(self.admin.close)
        return closers

    # -- partitions ----------------------------------------------------------

    def assigned(self, partitions: set[int]) -> None:
        # the group generation this assignment belongs to
        self.sinks.assign(partitions, group_generation(self.consumer))

    async def open_tasks(self, partitions: list[int], previous: dict) -> None:
        """Each partition on its own: one whose restore fails holds no other back."""
        failed: BaseException | None = None
        for partition in partitions:
            task = previous.get(partition)
            try:
                await self._open(partition, None if task is None else task.local)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed

    async def _open(self, partition: int, local: LocalState | None = None) -> None:
        """Fence the previous owner, restore the state, read the input from there."""
        source = TopicPartition(self.topic, partition)
        self.fenced.pop(partition, None)
        self.unopened.add(partition)  # until it is open: the supervisor tries again
        checkpoint = None
        try:
            checkpoint = await PartitionCheckpoint.open(
                self.clients.producer,
                f"{self.topic}-{partition}",  # the topic's name starts with the app id
                source,
                self.group_id,
                stage="stateful",
                on_error=self.kafka_failed,
            )
            if local is None:
                path = self.store_dir / f"p{partition}"
                local = await in_thread(LocalState, path, discard=LocalState.close)
            changelog_tp = TopicPartition(self.changelog_topic, partition)
            timeout_ms = self.settings.session_timeout_ms
            part = await self.retry(
                lambda: restore(local, self.reader, changelog_tp, checkpoint, timeout_ms)
            )
            if part.input_next is None:  # no state yet: the topic's beginning
                offsets = await self.retry(lambda: self.consumer.beginning_offsets([source]))
                part.input_next = part.committed_input = offsets[source]
        except BaseException:
            # cancelled by a revocation, or failed: nothing else holds the store, whose
            # lock would refuse the partition's next opening (restore closes a store it
            # rebuilt; this one may be closed already)
            if local is not None:
                with contextlib.suppress(Exception):
                    local.close()
            if checkpoint is not None:
                await checkpoint.close_shielded()
            raise
        part.wiring = self.wiring
        self.opened(part)
        self.restores += 1
        failpoints.reach("stateful-recovering")
        # everything it holds goes to the row sinks again
        batch = next(self.wiring.batches)
        self.sinks.add(partition, part.aggregator.open_rows(), batch)
        self.sinks.add(partition, part.outbox.resend(batch), batch)
        log.info(
            "stateful: partition %d restored in %.1fs (%d changelog records read): input "
            "from offset %d, watermark %d, %d users, %d final rows not yet in PostgreSQL",
            partition,
            part.restore_seconds,
            part.restored_records,
            part.input_next,
            part.aggregator.watermark,
            len(part.aggregator.users),
            len(part.outbox),
        )

    async def revoked(self, partitions: set[int]) -> None:
        self.sinks.revoke(partitions)

    async def give_up(self, partition: int) -> None:
        await self.close_task(partition)  # its state is left to the new owner
