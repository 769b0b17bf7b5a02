"""Scale out and back in while events flow; every sink ends up right.

One worker starts, two more join (three running, each with its own state folder),
then one is SIGKILLed and another SIGTERMed, leaving one. Unkeyed input, so every
event's user lands on a random source partition and routing by user matters.

- the time until committed input offsets advance again after the SIGKILL is printed;
- PostgreSQL: rows equal the independent expectation;
- lake: every source offset exactly once;
- enriched topic, read_committed: every event exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.integration import scenario
from tests.integration.checks import (
    diff,
    lake_when_complete,
    produce,
    read_rows,
    read_topic,
    source_offsets,
)
from tests.integration.conftest import create_topic, wait_for

PARTITIONS = 4
PRODUCE_S = 40


class OffsetWatch:
    """Samples the group's committed offsets on the input topic a few times a second."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.samples: list[tuple[float, dict[int, int]]] = []

    async def run(self, interval: float = 0.2) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            while True:
                try:
                    got = await admin.list_consumer_group_offsets(self.group)
                except Exception:  # a coordinator move mid-rebalance: just sample again
                    got = {}
                offsets = {
                    tp.partition: meta.offset
                    for tp, meta in got.items()
                    if tp.topic == self.topic and meta.offset >= 0
                }
                self.samples.append((time.monotonic(), offsets))
                await asyncio.sleep(interval)
        finally:
            await admin.close()

    def at(self, t: float) -> dict[int, int]:
        """Highest committed offset per partition seen up to time t."""
        best: dict[int, int] = {}
        for ts, offsets in self.samples:
            if ts > t:
                break
            for p, o in offsets.items():
                best[p] = max(best.get(p, -1), o)
        return best

    def first_advance(self, since: float, origin: float, partitions) -> dict[int, float]:
        """Seconds after `origin` at which each partition's committed offset first passed
        its value at `since` (partitions that never advanced are left out)."""
        base = self.at(since)
        seen: dict[int, float] = {}
        for ts, offsets in self.samples:
            if ts <= since:
                continue
            for p, o in offsets.items():
                if p in partitions and p not in seen and o > base.get(p, -1):
                    seen[p] = round(ts - origin, 2)
        return seen


@pytest.mark.slow
async def test_workers_join_and_leave_while_events_flow(
    bootstrap, pipeline_env, start_worker, tmp_path
):
    t_start = time.monotonic()
    per_partition, expected, total = scenario.in_the_past(
        seed=11, users=600, partitions=PARTITIONS, keyed=False
    )
    pace_s = PRODUCE_S / max(1, total // 200)

    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    watch = OffsetWatch(bootstrap, f"{pipeline_env['APP_ID']}-source", topic)
    watching = asyncio.create_task(watch.run())

    first = start_worker(IDLE_ADVANCE="1h")
    t0 = time.monotonic()
    producing = asyncio.create_task(
        produce(bootstrap, topic, per_partition, keyed=False, pace_s=pace_s)
    )
    try:
        await asyncio.sleep(8)
        assert first.alive(), first.tail()
        second = start_worker(IDLE_ADVANCE="1h")
        third = start_worker(IDLE_ADVANCE="1h")
        await asyncio.sleep(10)
        for w in (first, second, third):
            assert w.alive(), w.tail()

        kill_at = time.monotonic()
        await asyncio.to_thread(first.stop, signal.SIGKILL)
        await asyncio.to_thread(second.stop, signal.SIGTERM)
        term_done = time.monotonic()
        assert third.alive(), third.tail()

        await producing
        produced_s = time.monotonic() - t0

        # Resume: the survivor's first commit on each input partition with work left. The
        # SIGTERMed worker commits on its way out, so only commits after it left count.
        at_kill, at_term = watch.at(kill_at), watch.at(term_done)
        pending = {p for p, seq in enumerate(per_partition) if at_term.get(p, -1) < len(seq)}

        async def resumed():
            got = watch.first_advance(term_done, kill_at, pending)
            return got if set(got) == pending else None

        advanced = await wait_for(resumed, timeout=120, interval=0.5, what="commits to resume")
        print(
            f"\nscale-out: {total} events over {produced_s:.1f}s (pace {pace_s:.3f}s/200); "
            f"SIGTERM took {term_done - kill_at:.1f}s; committed at SIGKILL {at_kill}, after "
            f"SIGTERM {at_term}; survivor's first commit per partition, s after SIGKILL: "
            f"{advanced}; resume: first partition {min(advanced.values())}s, "
            f"all partitions {max(advanced.values())}s"
        )

        async def rows_converged():
            assert third.alive(), third.tail()
            return diff(expected, await read_rows(pipeline_env["DATABASE_URL"])) or True

        await wait_for(rows_converged, timeout=300, interval=3, what="rows after scale in")
        print(
            f"rows converged {time.monotonic() - t0:.1f}s after the first worker started; "
            f"committed offsets then {watch.at(time.monotonic())}"
        )
    finally:
        producing.cancel()
        watching.cancel()
        await asyncio.gather(producing, watching, return_exceptions=True)

    in_lake = await lake_when_complete(pipeline_env["LAKE_DIR"], total)
    twice = [k for k, n in in_lake.items() if n > 1]
    assert not twice, f"{len(twice)} offsets in the lake more than once, e.g. {twice[:5]}"
    assert set(in_lake) == await source_offsets(bootstrap, topic), "lake misses or invents offsets"

    enriched = await read_topic(bootstrap, pipeline_env["ENRICHED_TOPIC"])
    by_source: dict[tuple[int, int], list[dict]] = {}
    for record in enriched:
        value = orjson.loads(record.value)
        value.pop("processing_time", None)
        by_source.setdefault((value["kafka_partition"], value["kafka_offset"]), []).append(value)
    assert set(by_source) == set(in_lake), "enriched topic misses or invents events"
    twice = {key: len(copies) for key, copies in by_source.items() if len(copies) > 1}
    assert not twice, f"{len(twice)} events in the enriched topic more than once: {twice}"[:2000]
    print(
        f"enriched: {len(enriched)} records for {total} events, each once; "
        f"test took {time.monotonic() - t_start:.1f}s"
    )
