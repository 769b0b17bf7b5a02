"""Two hosts, simulated: two workers with nothing local in common share one lake on S3.

Each worker runs in a folder of its own (its working folder, STATE_DIR and log), with
one Kafka, one PostgreSQL and one bucket of devstack's S3 server (versitygw) in
common: LAKE_URI=s3://... and the AWS_* options, as on two machines. Unkeyed input, so
every user's events arrive on every source partition and the user-keyed routing
between the hosts matters.

- lake: every source offset exactly once (and nothing else);
- enriched topic, read_committed: every event exactly once;
- PostgreSQL: the tables equal the independent expectation;
- neither the logs nor /api/stats hold the object store's secret;

first with both hosts up throughout, then with one of them killed while the lake is
being written: by SIGKILL while the events flow (a flush every 250 ms on both, so a
lake commit is under way much of the time), and by exiting as kill -9 would right
after its twelfth lake commit has landed, before it has recorded it
(PIPELINE_FAILPOINTS=after-lake-commit=12, app/failpoints.py).
"""

from __future__ import annotations

import asyncio
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
    source_offsets,
)
from tests.integration.conftest import create_topic, wait_for
from tests.integration.test_faults import assert_no_secret, web_up
from tests.integration.web_support import api

PARTITIONS = 4
PRODUCE_S = 25


def start_host(start_worker, tmp_path, name: str, s3_lake: dict, **overrides: str):
    """A worker as on a host of its own: its folder, state and log; the lake on S3."""
    home = tmp_path / name
    return start_worker(
        state=f"{name}/state",
        cwd=home,
        IDLE_ADVANCE="1h",
        LAKE_DIR="",  # nothing local: LAKE_URI is the lake
        **s3_lake,
        **overrides,
    )


async def exactly_once_everywhere(bootstrap, env, s3_lake, lake, survivor, expected, total):
    """Rows equal the expectation; the lake and the enriched topic hold each event once."""

    async def rows_converged():
        assert survivor.alive(), survivor.tail()
        return diff(expected, await read_rows(env["DATABASE_URL"])) or True

    await wait_for(rows_converged, timeout=300, interval=3, what="rows equal the expectation")
    options = dict(lake.storage_options)
    in_lake = await lake_when_complete(lake.uri, total, options)
    twice = [k for k, n in in_lake.items() if n > 1]
    assert not twice, f"{len(twice)} offsets in the lake more than once, e.g. {twice[:5]}"
    topic = env["INPUT_TOPIC"]
    assert set(in_lake) == await source_offsets(bootstrap, topic), "lake misses or invents"

    copies: dict[tuple[int, int], int] = {}
    for record in await read_topic(bootstrap, env["ENRICHED_TOPIC"]):
        value = orjson.loads(record.value)
        key = (value["kafka_partition"], value["kafka_offset"])
        copies[key] = copies.get(key, 0) + 1
    assert set(copies) == set(in_lake), "the enriched topic misses or invents events"
    twice = [k for k, n in copies.items() if n > 1]
    assert not twice, f"{len(twice)} events in the enriched topic twice, e.g. {twice[:5]}"


def no_secret_shown(hosts, s3_lake, stats: list[dict]) -> None:
    secret = s3_lake["AWS_SECRET_ACCESS_KEY"]
    for host in hosts:
        assert_no_secret(host.log.read_text(errors="replace"), secret)
    for body in stats:
        assert body["lake"]["dir"] == s3_lake["LAKE_URI"], body["lake"]
        assert secret not in orjson.dumps(body).decode()


async def run_two_hosts(bootstrap, env, s3_lake, start_worker, tmp_path, seed, kill_b=None):
    """`kill_b`: None, "sigkill" (host-b SIGKILLed 40% into the input) or "after-lake-commit"
    (host-b exits with 137 right after its twelfth lake commit)."""
    from app.sinks.lake.location import resolve

    lake = resolve(s3_lake["LAKE_URI"], s3_lake)
    per_partition, expected, total = scenario.in_the_past(
        seed=seed, users=700, partitions=PARTITIONS, keyed=False
    )
    topic = env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    flush = {"LAKE_FLUSH": "250ms"} if kill_b else {}
    crash = {"PIPELINE_FAILPOINTS": "after-lake-commit=12"} if kill_b == "after-lake-commit" else {}
    a = start_host(start_worker, tmp_path, "host-a", s3_lake, **flush)
    b = start_host(start_worker, tmp_path, "host-b", s3_lake, **flush, **crash)
    assert a.cwd != b.cwd and a.env["STATE_DIR"] != b.env["STATE_DIR"]
    await web_up(a)
    await web_up(b)
    pace_s = PRODUCE_S / max(1, total // 200)
    started = time.monotonic()
    producing = asyncio.create_task(produce(bootstrap, topic, per_partition, False, pace_s))
    stats = []
    try:
        if crash:

            async def crashed():
                return not b.alive()

            await wait_for(crashed, timeout=60, interval=0.2, what="host-b's crash")
            assert b.proc.returncode == 137, b.tail()
            print(f"\nhost-b crashed after a lake commit {time.monotonic() - started:.1f}s in")
        await asyncio.sleep(PRODUCE_S * 0.4)
        assert a.alive(), a.tail()
        for host in (a, b) if b.alive() else (a,):
            stats.append((await api(host, "/api/stats"))[1])
        if kill_b == "sigkill":
            # both hosts have written the lake by now (a commit each at least)
            assert all(s["lake"]["commits"] > 0 for s in stats), [s["lake"] for s in stats]
            await asyncio.to_thread(b.stop, signal.SIGKILL)
            print(f"\nhost-b killed {time.monotonic() - started:.1f}s into the input")
        await producing
    finally:
        producing.cancel()
        await asyncio.gather(producing, return_exceptions=True)
    await exactly_once_everywhere(bootstrap, env, s3_lake, lake, a, expected, total)
    if not kill_b:
        for host in (a, b):
            _, body = await api(host, "/api/stats")
            assert body["lake"]["commits"] > 0 and body["lake"]["ok"], body["lake"]
            stats.append(body)
    no_secret_shown((a, b), s3_lake, stats)
    print(
        f"\n{total} events, two hosts{f' (host-b: {kill_b})' if kill_b else ''}: lake, "
        f"enriched and tables exact {time.monotonic() - started:.1f}s after the input began"
    )


async def test_two_hosts_share_one_lake_on_s3(
    bootstrap, pipeline_env, s3_lake, start_worker, tmp_path
):
    await run_two_hosts(bootstrap, pipeline_env, s3_lake, start_worker, tmp_path, 21, False)


@pytest.mark.parametrize("kill", ["sigkill", "after-lake-commit"])
async def test_one_of_two_hosts_killed_mid_write(
    bootstrap, pipeline_env, s3_lake, start_worker, tmp_path, kill
):
    await run_two_hosts(bootstrap, pipeline_env, s3_lake, start_worker, tmp_path, 23, kill)
