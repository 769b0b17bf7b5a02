"""A backlog already in `user_activity` when the first worker starts reaches PostgreSQL
whole (docs/contract.md, Watermark: a backlog gives the rows a live stream gives).

Once, this stalled: the stateful stage stopped writing 10 s after start at 15% of the
backlog's page views (Faust's consumer had lost partitions in its first rebalance).
The test waits for PostgreSQL itself, not for the source stage's commits.
"""

from __future__ import annotations

import time

from tests.integration import scenario
from tests.integration.checks import diff, produce, read_rows
from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4


async def test_a_preloaded_backlog_reaches_postgres_whole(bootstrap, pipeline_env, start_worker):
    start_ms = (int(time.time() * 1000) - 4 * 3_600_000) // 1000 * 1000 + 7
    per_partition = scenario.build(
        seed=31, users=10_000, partitions=PARTITIONS, start_ms=start_ms,
        span_ms=60 * scenario.MIN, keyed=True,
    )  # fmt: skip
    expected = scenario.expect(per_partition)
    total = sum(len(s) for s in per_partition)
    views = sum(expected.page_views.values())
    assert total > 150_000 and views > 75_000

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    await produce(bootstrap, topic, per_partition, keyed=True)
    worker = start_worker(IDLE_ADVANCE="1h")
    started = time.monotonic()
    url = pipeline_env["DATABASE_URL"]

    async def page_views_add_up():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        got = await read_rows(url)
        have = sum(got.page_views.values()) if got else 0
        return True if have == views else f"{have:,} of {views:,} page views in PostgreSQL"

    await wait_for(page_views_add_up, timeout=300, interval=2, what="the backlog's page views")
    took = time.monotonic() - started

    async def rows_equal():
        return diff(expected, await read_rows(url)) or True

    await wait_for(rows_equal, timeout=60, interval=2, what="rows equal the expectation")
    print(f"\n{total:,} events, {views:,} page views in PostgreSQL {took:.1f}s after start")
