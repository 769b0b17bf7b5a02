"""A worker frozen while its partitions move to another worker commits nothing.

Worker A reads a live stream; it is frozen with SIGSTOP while a transaction is
open (records flow all the time, and one commits every COMMIT_INTERVAL). Its
session times out, worker B takes every partition over and starts the same
transactional ids, which fences A. A is then resumed with its old transaction
open and records of its own not yet sent: none of it may be committed. (A then
rejoins the group as a new member and may be given partitions again, from the
offsets B committed: that is ordinary rebalancing.)

- A meets the fence: its commit is refused, which its log and /api/stats report;
- the enriched topic, read_committed, holds every valid event exactly once;
- the lake holds every source offset exactly once;
- PostgreSQL rows equal the independent expectation (the stateful stage's changelog,
  input offsets and rows are fenced the same way: app/stateful/service.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

import orjson

from tests.integration import scenario
from tests.integration.checks import diff, lake_when_complete, produce, read_rows, read_topic
from tests.integration.conftest import create_topic, wait_for
from tests.integration.web_support import started_api

PARTITIONS = 4


async def stats(http, worker) -> dict:
    api = await started_api(http, worker)
    return await api.json("/api/stats")


async def test_a_frozen_worker_is_fenced_and_commits_nothing(bootstrap, pipeline_env, start_worker):
    import aiohttp

    per_partition, expected, total = scenario.in_the_past(
        seed=23, users=2500, partitions=PARTITIONS, keyed=True
    )
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    a = start_worker(state="a", IDLE_ADVANCE="1h")
    producing = asyncio.create_task(
        # about 1,000 events/s, for longer than A's freeze and B's takeover
        produce(bootstrap, topic, per_partition, keyed=True, pace_s=0.2)
    )
    async with aiohttp.ClientSession() as http:

        async def a_commits():
            assert a.alive(), a.tail()
            got = await stats(http, a)
            return got if got["totals"]["transactions_committed"] > 20 else None

        await wait_for(a_commits, timeout=60, interval=0.5, what="worker A committing")
        os.killpg(a.proc.pid, signal.SIGSTOP)
        try:
            b = start_worker(state="b", IDLE_ADVANCE="1h")

            async def b_owns_everything():
                assert b.alive(), b.tail()
                got = await stats(http, b)
                owned = [s for s in got["sources"] if s["assigned"]]
                busy = got["totals"]["transactions_committed"] > 5
                return got if len(owned) == PARTITIONS and busy else None

            await wait_for(b_owns_everything, timeout=90, interval=1, what="B taking over")
        finally:
            os.killpg(a.proc.pid, signal.SIGCONT)

        async def a_met_the_fence():
            assert a.alive(), a.tail()
            got = await stats(http, a)
            return got if got["totals"]["commits_refused_by_fence"] > 0 else None

        await wait_for(a_met_the_fence, timeout=60, interval=0.5, what="A meeting the fence")
        assert not producing.done(), "the input ran out before A woke: no flow to fence"
        await producing

    log = a.log.read_text(errors="replace")
    assert "owned by another worker" in log, "A's log does not report the fence:\n" + a.tail()

    in_lake = await lake_when_complete(pipeline_env["LAKE_DIR"], total)
    assert max(in_lake.values()) == 1, "an offset is in the lake twice"
    enriched = await read_topic(bootstrap, pipeline_env["ENRICHED_TOPIC"])
    copies = Counter(
        (v["kafka_partition"], v["kafka_offset"]) for v in (orjson.loads(r.value) for r in enriched)
    )
    assert set(copies) == set(in_lake), "the enriched topic misses or invents events"
    twice = [k for k, n in copies.items() if n > 1]
    assert not twice, f"{len(twice)} events are in the enriched topic twice, e.g. {twice[:5]}"

    async def rows_converged():
        assert a.alive() and b.alive(), a.tail() + "\n" + b.tail()
        return diff(expected, await read_rows(pipeline_env["DATABASE_URL"])) or True

    await wait_for(rows_converged, timeout=180, interval=2, what="rows after the freeze")
    print(f"\nfenced worker committed nothing; enriched {len(enriched)} records for {total}")
