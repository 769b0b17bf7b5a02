"""The in-memory Kafka against the contract it shares with the real broker
(tests/kafka_contract.py; the broker's side: tests/integration/test_fake_kafka_contract.py)."""

from __future__ import annotations

import pytest

from tests import kafka_contract as contract
from tests.unit.fake_kafka import FakeKafka


class FakeCluster:
    def __init__(self) -> None:
        self.kafka = FakeKafka()

    async def create_topic(self, name: str, partitions: int, compact: bool = False) -> None:
        self.kafka.create_topic(name, partitions, compact)

    def producer(self, transactional_id: str):
        return self.kafka.producer(transactional_id)

    def reader(self):
        return self.kafka.reader()

    def admin(self):
        return self.kafka.admin()

    async def compacted(self, topic: str, partition: int, expect) -> list:
        self.kafka.compact(topic)
        seen, _ = await contract.read(self, topic, partition)
        return seen


@pytest.mark.parametrize("behaviour", contract.BEHAVIOURS, ids=lambda b: b.__name__)
async def test_the_fake_behaves_as_the_broker(behaviour):
    await behaviour(FakeCluster())
