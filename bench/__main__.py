"""python -m bench: preload a backlog, measure the raw consume ceiling and the pipeline.

Prints figures and writes them as JSON. Not a test: the numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import stack
from producer.simulator import Simulator

ROOT = Path(__file__).resolve().parent.parent


async def preload(bootstrap: str, topic: str, n: int, partitions: int, users: int) -> float:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await admin.close()
    start_ms = int(time.time() * 1000) - 6 * 3_600_000
    sim = iter(Simulator(users, seed=1, start_ms=start_ms, step_ms=20, late_ratio=0.05))
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    began = time.monotonic()
    try:
        for i in range(n):
            item = next(sim)
            await producer.send(topic, orjson.dumps(item.value), key=item.user_id.encode())
            if i % 50_000 == 0 and i:
                print(f"  preload: {i}/{n}", file=sys.stderr, flush=True)
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - began


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
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        seen = 0
        began = time.monotonic()
        while seen < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for record in records:
                    orjson.loads(record.value)
                seen += len(records)
        return n / (time.monotonic() - began)
    finally:
        await consumer.stop()


async def committed_through(bootstrap: str, group: str, topics: list[str]) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic in topics}


async def end_offsets(bootstrap: str, topic: str) -> dict:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return await consumer.end_offsets(tps)
    finally:
        await consumer.stop()


async def scratch_database(database_url: str, name: str, drop: bool = False) -> str:
    """A database of the benchmark's own, so it never touches stream_data's rows."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url.rsplit("/", 1)[0] + f"/{name}"


async def pipeline(bootstrap: str, database_url: str, topic: str, n: int, work: Path) -> dict:
    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "APP_ID": app_id,
        "INPUT_TOPIC": topic,
        "ENRICHED_TOPIC": f"{topic}-enriched",
        "DLQ_TOPIC": f"{topic}-dlq",
        "LAKE_DIR": str(work / "lake"),
        "STATE_DIR": str(work / "state"),
        "WEB_PORT": "16999",
        "IDLE_ADVANCE": "1h",
        "LAKE_FLUSH": "2s",
    }
    log = open(work / "worker.log", "wb")  # noqa: SIM115 - lives as long as the worker
    began = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ends = await end_offsets(bootstrap, topic)
        first_progress = None
        while True:
            await asyncio.sleep(1)
            if proc.poll() is not None:
                raise RuntimeError(f"worker exited; see {work / 'worker.log'}")
            done = await committed_through(bootstrap, app_id, [topic])
            committed = sum(done.get(tp, 0) for tp in ends)
            if committed and first_progress is None:
                first_progress, first_committed = time.monotonic(), committed
            print(f"  pipeline: committed {committed}/{n}", file=sys.stderr, flush=True)
            if all(done.get(tp, -1) >= end for tp, end in ends.items()):
                break
        took = time.monotonic() - began
        steady = time.monotonic() - first_progress
        return {
            "seconds_including_start": round(took, 1),
            "events_per_s_including_start": round(n / took),
            # from the first offset commit to the last: the worker's start is excluded
            "events_per_s": round((n - first_committed) / steady) if steady > 0 else None,
        }
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


async def main_async(args: argparse.Namespace) -> dict:
    info = stack.up()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        print(
            f"preloading {args.events} events over {args.partitions} partitions...", file=sys.stderr
        )
        preload_s = await preload(info.bootstrap, topic, args.events, args.partitions, args.users)
        ceilings = [await ceiling(info.bootstrap, topic, args.events) for _ in range(3)]
        result = {
            "events": args.events,
            "partitions": args.partitions,
            "users": args.users,
            "preload_s": round(preload_s, 1),
            "ceiling_events_per_s_median": round(statistics.median(ceilings)),
            "ceiling_runs": [round(c) for c in ceilings],
        }
        db_name = topic.replace("-", "_")
        db_url = await scratch_database(info.database_url, db_name)
        try:
            result["pipeline"] = await pipeline(info.bootstrap, db_url, topic, args.events, work)
        finally:
            await scratch_database(info.database_url, db_name, drop=True)
        result["ratio_pipeline_to_ceiling"] = round(
            result["pipeline"]["events_per_s"] / result["ceiling_events_per_s_median"], 3
        )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--out", default="bench-results/latest.json")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
