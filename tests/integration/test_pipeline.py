"""Issue 3: the worker's rows equal an independently computed expectation.

Keyed and unkeyed input, one and two workers, a backlog read at full speed and a
live stream: all must give exactly the same rows (SPEC section 2).
"""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import scenario
from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4


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


async def produce(bootstrap: str, topic: str, per_partition, keyed: bool, pace_s: float = 0):
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
            if pace_s and n % 200 == 0:
                await asyncio.sleep(pace_s)
        await producer.flush()
    finally:
        await producer.stop()


@pytest.mark.parametrize(
    ("keyed", "backlog", "workers"),
    [(True, True, 1), (False, True, 2), (False, False, 1)],
    ids=["keyed-backlog-1-worker", "unkeyed-backlog-2-workers", "unkeyed-live-1-worker"],
)
async def test_rows_equal_independent_expectation(
    keyed, backlog, workers, bootstrap, pipeline_env, start_worker
):
    start_ms = (int(time.time() * 1000) - 3 * 3_600_000) // 1000 * 1000 + 123
    per_partition = scenario.build(
        seed=11,
        users=250,
        partitions=PARTITIONS,
        start_ms=start_ms,
        span_ms=40 * scenario.MIN,
        keyed=keyed,
    )
    expected = scenario.expect(per_partition)
    total = sum(len(s) for s in per_partition)
    assert total > 3000 and expected.late > 50
    assert {s for _, s in expected.sessions.values()} == {"active", "ended", "timed_out"}

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    env = {"IDLE_ADVANCE": "1h"}
    if backlog:
        await produce(bootstrap, topic, per_partition, keyed)
    started = [start_worker(**env) for _ in range(workers)]
    if not backlog:
        await produce(bootstrap, topic, per_partition, keyed, pace_s=0.05)

    url = pipeline_env["DATABASE_URL"]

    async def converged():
        for worker in started:
            assert worker.alive(), f"worker died:\n{worker.tail()}"
        return diff(expected, await read_rows(url)) or True

    await wait_for(converged, timeout=240, interval=2, what="rows to equal the expectation")
