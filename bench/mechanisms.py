"""What each delivery mechanism costs: pipeline runs with one mechanism taken out
(bench/variant.py), and a producer microbenchmark of Kafka transactions (plain against
one transaction per batch), the mechanism every commit of both stages uses
(app/commit/checkpoint.py)."""

from __future__ import annotations

import statistics
import time
import uuid

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition

from bench.catch_up import catch_up
from bench.harness import Harness
from bench.kafka import create_topic
from bench.variant import VARIANTS
from devstack.process import say

RECORD = orjson.dumps(
    {
        "event_id": "e000000001",
        "user_id": "user_01234",
        "event_type": "page_view",
        "page_url": "/products/42",
        "event_time": "2026-11-26T12:00:00.000Z",
        "processing_time": "2026-11-26T12:00:00.123Z",
        "kafka_partition": 3,
        "kafka_offset": 123456,
    }
)


async def mechanisms(h: Harness) -> dict:
    n = h.args.mechanism_events
    topic, loaded = await h.backlog("mechanisms", n, h.args.users)
    runs: dict[str, list] = {}
    # Round-robin, as-shipped first and last: drift on a shared machine hits every
    # variant alike, and the spread of as-shipped's runs is the noise.
    others = [v for v in VARIANTS if v != "as-shipped"]
    order = ["as-shipped", *others] * h.args.repeat + ["as-shipped"]
    for i, variant in enumerate(order):
        async with h.database(f"v{i}") as db:
            worker = h.worker(f"variant-{i}", topic, db, LAKE_FLUSH="2s")
            worker.variant = variant
            worker.start()
            try:
                say(f"mechanisms: {variant}...")
                run = await catch_up(h.bootstrap, worker, topic, loaded, db, variant)
            finally:
                worker.stop()
        runs.setdefault(variant, []).append(run["events_per_s"])
    base = statistics.median(runs["as-shipped"])
    variants = {
        name: {
            "events_per_s": statistics.median(rates),
            "runs": rates,
            "vs_as_shipped": round(statistics.median(rates) / base, 3),
        }
        for name, rates in runs.items()
    }
    say("mechanisms: producer modes (Kafka transactions)...")
    producer = await producer_modes(h.bootstrap, n, batch=min(5_000, n))
    return {"events": n, "variants": variants, "producer": producer}


async def _send_batches(producer: AIOKafkaProducer, topic: str, partitions: int, n: int) -> None:
    futures = []
    for p in range(partitions):
        batch = producer.create_batch()
        for _ in range(n // partitions):
            if batch.append(key=b"user_01234", value=RECORD, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=p))
                batch = producer.create_batch()
                batch.append(key=b"user_01234", value=RECORD, timestamp=None)
        futures.append(await producer.send_batch(batch, topic, partition=p))
    for future in futures:
        await future


async def producer_modes(bootstrap: str, records: int, batch: int, partitions: int = 4) -> dict:
    """Records/s of one producer writing `records` in batches of `batch`, per mode."""
    topic = f"bench-txn-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, partitions)
    modes = {
        "acks=1": {"acks": 1},
        "idempotent, acks=all": {"acks": "all", "enable_idempotence": True},
        # as shipped: every commit of both stages is one such transaction
        "transactional, commit per batch": {
            "acks": "all",
            "enable_idempotence": True,
            "transactional_id": f"bench-{uuid.uuid4().hex[:8]}",
        },
    }
    out: dict = {"records": records, "records_per_transaction": batch}
    for name, options in modes.items():
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=1 << 20, **options
        )
        await producer.start()
        commits = []
        try:
            began = time.monotonic()
            for chunk in range(records // batch):
                if "transactional_id" in options:
                    await producer.begin_transaction()
                    await _send_batches(producer, topic, partitions, batch)
                    # what a consume-transform-produce step also commits: its input offset
                    await producer.send_offsets_to_transaction(
                        {TopicPartition(topic, 0): chunk * batch}, f"{topic}-group"
                    )
                    t = time.monotonic()
                    await producer.commit_transaction()
                    commits.append(time.monotonic() - t)
                else:
                    await _send_batches(producer, topic, partitions, batch)
            took = time.monotonic() - began
        finally:
            await producer.stop()
        out[name] = {"records_per_s": round(records / took)}
        if commits:
            out[name]["commit_ms_median"] = round(statistics.median(commits) * 1000, 1)
    return out
