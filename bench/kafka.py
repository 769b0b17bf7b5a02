"""Kafka I/O of the benchmark: the preload, the raw consume ceiling, offsets."""

from __future__ import annotations

import contextlib
import sys
import time

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from app.aiokafka_internals import consumer_client
from producer.simulator import Simulator

LATENESS_MS = 120_000  # the pipeline's default LATENESS


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def preload(
    bootstrap: str,
    topic: str,
    n: int,
    partitions: int,
    users: int,
    *,
    hours_ago: float = 6,
    seed: int = 1,
) -> dict:
    """N simulated events (5% late, 0.1% malformed), keyed by user, 20 ms of event time
    apart from `hours_ago` on; creates the topic unless `partitions` is 0.

    Also counts the page views PostgreSQL must end up with: those on time at their
    partition (docs/contract.md, Lateness: older than the partition's largest earlier
    event_time minus LATENESS is late), judged here without the pipeline's code.
    """
    if partitions:
        await create_topic(bootstrap, topic, partitions)
    into = partitions or (await _partition_count(bootstrap, topic))
    stream_time: dict[int, int] = {}
    on_time_views = 0
    start_ms = int((time.time() - hours_ago * 3600) * 1000)
    sim = iter(
        Simulator(users, seed=seed, start_ms=start_ms, step_ms=20, late_ratio=0.05, bad_ratio=0.001)
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    began = time.monotonic()
    distinct: set[str] = set()
    bad = 0
    try:
        for i in range(n):
            item = next(sim)
            if isinstance(item.value, bytes):
                bad += 1
                await producer.send(topic, item.value)
            else:
                distinct.add(item.user_id)
                key = item.user_id.encode()
                partition = (murmur2(key) & 0x7FFFFFFF) % into
                t = item.value["event_time"]
                newest = stream_time.get(partition)
                if newest is None or t >= newest - LATENESS_MS:
                    on_time_views += item.value["event_type"] == "page_view"
                stream_time[partition] = t if newest is None else max(newest, t)
                await producer.send(topic, orjson.dumps(item.value), key=key, partition=partition)
            if i % 100_000 == 0 and i:
                print(f"  preload: {i:,}/{n:,}", file=sys.stderr, flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    return {
        "events": n,
        "distinct_users": len(distinct),
        "malformed": bad,
        "on_time_page_views": on_time_views,
        "seconds": round(time.monotonic() - began, 1),
    }


async def _partition_count(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return len(await _partitions(consumer, topic))
    finally:
        await consumer.stop()


async def append(bootstrap: str, topic: str, n: int, users: int) -> dict:
    """N more events into an existing topic, from half an hour ago (after any backlog)."""
    return await preload(bootstrap, topic, n, 0, users, hours_ago=0.5, seed=2)


async def ceiling(bootstrap: str, topic: str, n: int) -> float:
    """Events/s of a bare aiokafka consumer that fetches and decodes every record."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=4 << 20,
        fetch_max_bytes=16 << 20,
    )
    await consumer.start()
    try:
        consumer.assign(await _partitions(consumer, topic))
        seen = 0
        began = time.monotonic()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    with contextlib.suppress(orjson.JSONDecodeError):  # the malformed share
                        orjson.loads(record.value)
                seen += len(records)
        return n / (time.monotonic() - began)
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer_client(consumer).force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(partitions)]


async def committed(bootstrap: str, group: str, topic: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return await consumer.end_offsets(await _partitions(consumer, topic))
    finally:
        await consumer.stop()
