"""The Kafka clients both stages use, made in one place with one set of options.

Stages take a `KafkaClients` and ask it for producers, consumers and an admin client,
so that their unit tests can hand them an in-memory Kafka instead
(tests/unit/fake_kafka.py) and nothing else in the stages knows how clients are made.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.settings import Settings, kafka_client_options

log = logging.getLogger(__name__)


class KafkaClients:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._common = {
            "bootstrap_servers": settings.kafka_bootstrap_servers,
            **kafka_client_options(settings),
        }

    def producer(self, transactional_id: str) -> AIOKafkaProducer:
        """A transactional producer, not started (`start` is init_transactions)."""
        return AIOKafkaProducer(
            **self._common,
            transactional_id=transactional_id,
            acks="all",
            linger_ms=5,
            max_batch_size=1 << 20,
            max_request_size=8 << 20,
            # A commit waits for its sends with its own timeout (app/commit/), so this
            # only bounds one request; a broker that stays away is handled there.
            request_timeout_ms=30_000,
            # a transaction's produce requests can come back NOT_ENOUGH_REPLICAS while
            # the broker verifies the transaction (app/source/verification.py): retry
            # soon, not in 100 ms
            retry_backoff_ms=10,
        )

    def consumer(self, group_id: str, **options) -> AIOKafkaConsumer:
        """A consumer of `group_id` that commits nothing itself, reading committed records."""
        return AIOKafkaConsumer(
            **self._common,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
            max_poll_interval_ms=300_000,
            **options,
        )

    def reader(self) -> AIOKafkaConsumer:
        """A consumer without a group, for reading partitions it is assigned (restores)."""
        return AIOKafkaConsumer(
            **self._common,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
        )

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self._common)


async def create_topics(admin, topics: list[NewTopic]) -> None:
    """Create those of `topics` that do not exist yet (another worker may be first)."""
    existing = set(await admin.list_topics())
    wanted = [t for t in topics if t.name not in existing]
    if wanted:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(wanted)


async def partition_count(admin, topic: str) -> int:
    """Partitions of `topic`, waiting briefly for a topic just created to show up."""
    for _ in range(100):
        described = await admin.describe_topics([topic])
        partitions = described[0].get("partitions") if described else None
        if partitions:
            return len(partitions)
        await asyncio.sleep(0.1)
    raise KafkaError(f"topic {topic} has no partitions in the cluster metadata")
