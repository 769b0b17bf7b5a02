"""The real broker against the contract the in-memory Kafka is held to
(tests/kafka_contract.py; the fake's side: tests/unit/test_fake_kafka.py). A behaviour
that passes here and fails there is the fake's to fix."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests import kafka_contract as contract

# The log cleaner compacts only closed segments below the last stable offset, once a
# segment is dirty enough; these make it do so within seconds (its own back-off,
# log.cleaner.backoff.ms, is 15 s by default). delete.retention.ms stays Kafka's default.
COMPACT_FAST = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.001",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "86400000",
}
COMPACTION_WAIT_S = 120
ROLL_KEY = b"~roll"  # a record that closes the segment before it; left out of reads


class BrokerCluster:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    async def create_topic(self, name: str, partitions: int, compact: bool = False) -> None:
        admin = self.admin()
        await admin.start()
        try:
            configs = COMPACT_FAST if compact else {}
            await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs)])
        finally:
            await admin.close()

    def producer(self, transactional_id: str):
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap, transactional_id=transactional_id)

    def reader(self):
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            isolation_level="read_committed",
            enable_auto_commit=False,
        )

    def admin(self):
        return AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)

    async def compacted(self, topic: str, partition: int, expect) -> list:
        """What a reader sees once the cleaner has left one record per key (or, after
        COMPACTION_WAIT_S, what it sees then: the caller's assertion shows it)."""
        roller = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await roller.start()
        deadline = time.monotonic() + COMPACTION_WAIT_S
        try:
            while True:
                await asyncio.sleep(0.2)  # past segment.ms: the next append rolls
                await roller.send_and_wait(topic, b"", key=ROLL_KEY, partition=partition)
                seen, _ = await contract.read(self, topic, partition)
                seen = [kv for kv in seen if kv[0] != ROLL_KEY]
                if len(seen) == len({k for k, _ in seen}) or time.monotonic() > deadline:
                    return seen
                await asyncio.sleep(2)
        finally:
            await roller.stop()


@pytest.mark.parametrize("behaviour", contract.BEHAVIOURS, ids=lambda b: b.__name__)
async def test_the_broker_behaves_as_the_fake_is_told_to(bootstrap, behaviour):
    await behaviour(BrokerCluster(bootstrap))
