"""The worker's rows equal an independently computed expectation.

Keyed and unkeyed input, one and two workers, a backlog read at full speed and a
live stream: all must give exactly the same rows (docs/contract.md, Watermark).
"""

from __future__ import annotations

import pytest

from tests.integration import scenario
from tests.integration.checks import diff, produce, read_rows
from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4


@pytest.mark.parametrize(
    ("keyed", "backlog", "workers"),
    [(True, True, 1), (False, True, 2), (False, False, 1)],
    ids=["keyed-backlog-1-worker", "unkeyed-backlog-2-workers", "unkeyed-live-1-worker"],
)
async def test_rows_equal_independent_expectation(
    keyed, backlog, workers, bootstrap, pipeline_env, start_worker
):
    per_partition, expected, total = scenario.in_the_past(
        seed=11, users=250, partitions=PARTITIONS, keyed=keyed, hours_ago=3, offset_ms=123
    )
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
