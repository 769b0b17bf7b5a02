"""Shared checks for integration tests: rows in PostgreSQL, records in topics, the lake."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import asyncpg
import orjson
import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

from tests.integration import scenario


def _ms(value) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


async def read_rows(url: str) -> scenario.Expected | None:
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        pv = await conn.fetch(
            "SELECT window_start, window_end, page_url, view_count FROM page_view_counts"
        )
        au = await conn.fetch(
            "SELECT window_start, window_end, active_user_count FROM active_users"
        )
        ss = await conn.fetch(
            "SELECT user_id, session_start_time, session_end_time, "
            "session_duration_seconds, status FROM user_sessions"
        )
    except asyncpg.UndefinedTableError:
        return None
    finally:
        await conn.close()
    for r in pv:
        assert _ms(r["window_end"]) - _ms(r["window_start"]) == scenario.MIN
    for r in au:
        assert _ms(r["window_end"]) - _ms(r["window_start"]) == 5 * scenario.MIN
    for r in ss:
        start, end = _ms(r["session_start_time"]), _ms(r["session_end_time"])
        if end is None:
            assert r["session_duration_seconds"] is None
        else:
            assert r["session_duration_seconds"] == pytest.approx((end - start) / 1000)
    return scenario.Expected(
        page_views={(_ms(r["window_start"]), r["page_url"]): r["view_count"] for r in pv},
        active_users={_ms(r["window_start"]): r["active_user_count"] for r in au},
        sessions={
            (r["user_id"], _ms(r["session_start_time"])): (_ms(r["session_end_time"]), r["status"])
            for r in ss
        },
        late=0,
    )


def diff(expected: scenario.Expected, got: scenario.Expected | None) -> str | None:
    """None when equal, else a short description of the first differences."""
    if got is None:
        return "no tables yet"
    problems = []
    for name in ("page_views", "active_users", "sessions"):
        want, have = getattr(expected, name), getattr(got, name)
        if want != have:
            missing = {k: v for k, v in want.items() if have.get(k) != v}
            extra = {k: v for k, v in have.items() if k not in want}
            sample = sorted(missing.items())[:3]
            problems.append(
                f"{name}: {len(missing)} differ/missing e.g. "
                f"{[(k, v, have.get(k)) for k, v in sample]}, {len(extra)} extra"
            )
    return "; ".join(problems) or None


async def produce(
    bootstrap: str, topic: str, per_partition, keyed: bool, pace_s: float = 0, sent=None
):
    """Send every event; `sent` (a list of one int), when given, counts what was sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        cursors = [0] * len(per_partition)
        rng = random.Random(7)
        total = sum(len(seq) for seq in per_partition)
        for n in range(total):
            p = rng.choice([i for i, seq in enumerate(per_partition) if cursors[i] < len(seq)])
            e = per_partition[p][cursors[p]]
            cursors[p] += 1
            await producer.send(
                topic, orjson.dumps(e.value()), partition=p, key=e.user.encode() if keyed else None
            )
            if sent is not None:
                sent[0] = n + 1
            if pace_s and n % 200 == 0:
                await asyncio.sleep(pace_s)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str) -> list:
    """Every record of a topic, as a read_committed consumer sees it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        records = []

        async def behind() -> bool:
            for tp, end in ends.items():
                if await consumer.position(tp) < end:
                    return True
            return False

        while await behind():
            batch = await consumer.getmany(timeout_ms=2000)
            for recs in batch.values():
                records.extend(recs)
        return records
    finally:
        await consumer.stop()


async def source_offsets(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    """(partition, offset) of every record in the topic."""
    return {(r.partition, r.offset) for r in await read_topic(bootstrap, topic)}


def lake_offsets(lake_dir, storage_options=None) -> list[tuple[int, int]]:
    """(kafka_partition, kafka_offset) of every lake row, duplicates kept; `lake_dir` is
    a folder or an object-store URI (with its `storage_options`)."""
    try:
        table = pa.table(
            DeltaTable(str(lake_dir), storage_options=storage_options).to_pyarrow_table(
                columns=["kafka_partition", "kafka_offset"]
            )
        )
    except TableNotFoundError:
        return []
    return list(
        zip(table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True)
    )


async def lake_when_complete(lake_dir, total: int, storage_options=None) -> Counter:
    """Wait until the lake holds `total` distinct offsets; count each offset's rows."""
    from tests.integration.conftest import wait_for

    async def complete():
        got = set(lake_offsets(lake_dir, storage_options))
        return True if len(got) == total else f"{len(got)}/{total} offsets"

    await wait_for(complete, timeout=120, interval=2, what="every offset in the lake")
    return Counter(lake_offsets(lake_dir, storage_options))
