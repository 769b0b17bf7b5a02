"""The Kafka outputs as a sink: writes one batch's outputs into its source partition's
transaction, and says what went to the dead-letter topic and what was late (at most
once a minute each). The transactions commit in app/source/commit.py."""

from __future__ import annotations

import logging

from app.settings import Settings
from app.sinks.contract import SinkHealth
from app.source.reader import BatchOutput, DeadLetter
from app.source.transaction import PartitionTransaction
from app.stats import Stats
from app.throttle import LogThrottle
from app.wire import encode_events

log = logging.getLogger(__name__)


class OutputWriter:
    name = "kafka"

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        dlq_partitions: int,
        transactions: dict[int, PartitionTransaction],
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.dlq_partitions = dlq_partitions
        self.transactions = transactions  # the source stage's, one per source partition
        self.health = SinkHealth(settings.kafka_bootstrap_servers)
        self._dlq_log = LogThrottle(60)
        self._late_log = LogThrottle(60)

    def pending_rows(self) -> int:
        """Records in open transactions."""
        return sum(txn.records for txn in self.transactions.values())

    async def write(self, partition: int, out: BatchOutput, txn: PartitionTransaction) -> None:
        settings = self.settings
        for target, records in out.enriched.items():
            await txn.add(settings.enriched_topic, target, records)
        for target, events in out.forward.items():
            await txn.add(settings.internal_topic, target, [(None, encode_events(events))])
        if out.dead_letters:
            await txn.add(
                settings.dlq_topic,
                partition % self.dlq_partitions,
                [(d.key, d.value, self.headers(partition, d)) for d in out.dead_letters],
                headers=True,
            )
            self._dead_lettered(partition, out.dead_letters)
        if out.first_late is not None and self._late_log.allow(partition):
            offset, behind_ms = out.first_late
            log.info(
                "source: late event on partition %d at offset %d (%.1fs behind the watermark; "
                "logged once a minute)",
                partition,
                offset,
                behind_ms / 1000,
            )

    def headers(self, partition: int, dead: DeadLetter) -> list[tuple[str, bytes]]:
        return [
            ("reason", dead.reason.encode()),
            ("detail", dead.detail.encode()[:500]),
            ("source_topic", self.settings.input_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(dead.offset).encode()),
        ]

    def _dead_lettered(self, partition: int, dead_letters: list[DeadLetter]) -> None:
        for dead in dead_letters:
            self.stats.on_dead_letter(partition, dead.reason)
            if self._dlq_log.allow(dead.reason):
                log.warning(
                    "source: dead-lettered partition %d offset %d: %s: %s (logged once a "
                    "minute per reason)",
                    partition,
                    dead.offset,
                    dead.reason,
                    dead.detail,
                )
