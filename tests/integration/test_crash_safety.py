"""Crash the worker while events flow; every sink ends up right.

Two scenarios: SIGKILLs at random moments, and a crash at each phase of the source
stage's commit in turn (app/failpoints.py).

The kills land while the worker is busy: with input flowing, a transaction is open
at almost every moment (one commits every COMMIT_INTERVAL), so a kill falls between
a transaction's sends and its commit, or while a lake commit is being written; the
last kill comes seconds after a restart, while the new worker is still recovering.

- lake: every source offset exactly once;
- enriched topic, read with isolation_level=read_committed: every valid event
  exactly once;
- PostgreSQL: rows equal the independent expectation.
"""

from __future__ import annotations

import asyncio
import random
import signal

import orjson

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
KILLS = 4


async def test_sigkill_four_times_loses_and_double_counts_nothing(
    bootstrap, pipeline_env, start_worker, tmp_path
):
    per_partition, expected, total = scenario.in_the_past(
        seed=5, users=3800, partitions=PARTITIONS, keyed=True
    )
    assert total >= 50_000

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(state="state", IDLE_ADVANCE="1h")
    # about 1,000 events/s: the input outlasts the kills (29 s at most), so each lands
    # while input flows
    sent = [0]
    producing = asyncio.create_task(
        produce(bootstrap, topic, per_partition, keyed=True, pace_s=0.2, sent=sent)
    )
    rng = random.Random(99)
    sent_at_kills = [0]
    for n in range(KILLS):
        # the last one while the worker that replaced the previous victim recovers
        await asyncio.sleep(rng.uniform(1, 2) if n == KILLS - 1 else rng.uniform(4, 9))
        assert worker.alive(), worker.tail()
        worker.stop(signal.SIGKILL)
        assert not producing.done(), f"the input ran out before kill {n + 1}"
        assert sent[0] > sent_at_kills[-1], f"no input sent before kill {n + 1}"
        sent_at_kills.append(sent[0])
        worker = start_worker(state="state", IDLE_ADVANCE="1h")
    await producing
    print(f"\nevents sent at each kill: {sent_at_kills[1:]} of {total}")
    await every_sink_exactly_once(bootstrap, pipeline_env, worker, expected, total)


# Each crash point of both stages (app/failpoints.py), in turn, while input flows: the
# worker exits there by itself, as kill -9 would, and a new one takes over.
CRASH_POINTS = [
    "after-sends=15",
    "after-lake-commit=2",
    "mid-batch=40",
    "recovering=1",
    "stateful-after-sends=6",  # changelog records sent, the transaction not committed
    "stateful-after-commit=6",  # committed, the local store not written
    "stateful-before-postgres=6",  # local store written, the rows not handed over
    "stateful-recovering=2",  # a user-keyed partition restored and positioned
]


async def test_a_crash_at_each_commit_phase_loses_and_double_counts_nothing(
    bootstrap, pipeline_env, start_worker
):
    per_partition, expected, total = scenario.in_the_past(
        seed=8, users=3000, partitions=PARTITIONS, keyed=True
    )
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    # about 500 events/s: the input outlasts the crashes and the takeovers between them
    producing = asyncio.create_task(
        produce(bootstrap, topic, per_partition, keyed=True, pace_s=0.4)
    )
    for point in CRASH_POINTS:
        worker = start_worker(state="state", IDLE_ADVANCE="1h", PIPELINE_FAILPOINTS=point)

        async def crashed(worker=worker):
            return not worker.alive()

        await wait_for(crashed, timeout=60, interval=0.2, what=f"the crash at {point}")
        assert worker.proc.returncode == 137, worker.tail()
    assert not producing.done(), "the input ran out before the last crash"
    worker = start_worker(state="state", IDLE_ADVANCE="1h")
    await producing
    await every_sink_exactly_once(bootstrap, pipeline_env, worker, expected, total)


async def every_sink_exactly_once(bootstrap, pipeline_env, worker, expected, total) -> None:
    """Rows equal the expectation; the lake and the enriched topic (read_committed) hold
    every valid event exactly once."""

    async def rows_converged():
        assert worker.alive(), worker.tail()
        return diff(expected, await read_rows(pipeline_env["DATABASE_URL"])) or True

    await wait_for(rows_converged, timeout=300, interval=3, what="rows after the crashes")

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
    duplicates = {k: len(c) for k, c in by_source.items() if len(c) > 1}
    assert not duplicates, (
        f"{len(duplicates)} source offsets are in the enriched topic more than once, "
        f"e.g. {list(duplicates.items())[:5]}"
    )
    print(f"\nenriched: {len(enriched)} records for {total} events, each once")
