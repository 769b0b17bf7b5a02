"""The source stage's Kafka clients: their options, the output topics, and each
source partition's transactional producer (started again while the broker is away)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from app.settings import Settings, kafka_client_options
from app.source.transaction import PartitionTransaction
from app.throttle import Backoff

log = logging.getLogger(__name__)


def client_options(settings: Settings) -> dict:
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        **kafka_client_options(settings),
    }


def producer_options(settings: Settings) -> dict:
    return {
        **client_options(settings),
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": 1 << 20,
        "max_request_size": 8 << 20,
        # ride out a broker outage instead of expiring batches after 40 s
        "request_timeout_ms": 1_200_000,
        # a transaction's produce requests can come back NOT_ENOUGH_REPLICAS while the
        # broker verifies the transaction (verification.py): retry soon, not in 100 ms
        "retry_backoff_ms": 10,
    }


def consumer_options(settings: Settings, group_id: str) -> dict:
    return {
        **client_options(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 8 << 20,
        "fetch_max_bytes": 64 << 20,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 2_000,
        "max_poll_interval_ms": 300_000,
    }


async def declare_outputs(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Create the output topics that do not exist yet (the input topic is the user's)."""
    existing = set(await admin.list_topics())
    wanted = [
        NewTopic(name, settings.partitions, settings.replication_factor)
        for name in (settings.enriched_topic, settings.dlq_topic, settings.internal_topic)
        if name not in existing
    ]
    if wanted:
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker was first
            await admin.create_topics(wanted)


async def partition_count(admin: AIOKafkaAdminClient, topic: str) -> int:
    for _ in range(100):
        described = await admin.describe_topics([topic])
        partitions = described[0].get("partitions") if described else None
        if partitions:
            return len(partitions)
        await asyncio.sleep(0.1)
    raise KafkaError(f"topic {topic} has no partitions in the cluster metadata")


async def start_transaction(
    settings: Settings, group_id: str, partition: int, failed: Callable[[str], None]
) -> PartitionTransaction:
    """Source partition `partition`'s transactional producer; while the broker is away,
    retried (`failed` hears of each attempt that fails)."""
    topic = settings.input_topic
    backoff = Backoff(0.5, 10)
    while True:
        try:
            return await PartitionTransaction.start(
                TopicPartition(topic, partition),
                group_id,
                f"{settings.app_id}-{topic}-{partition}",
                **producer_options(settings),
            )
        except KafkaError as exc:
            failed(f"{type(exc).__name__}: {exc}")
            delay = backoff.next()
            log.warning(
                "source: cannot start the producer of partition %d (%s); retrying in %.1fs",
                partition,
                exc,
                delay,
            )
            await asyncio.sleep(delay)
