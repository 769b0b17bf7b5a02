"""The object store away for a minute: an outage like the lake folder's.

A worker writes its lake to an S3 server of this test's own (versitygw, devstack's
binary, its own port and folder: stopping it stops no one else's). The server is
stopped for a minute while events keep coming:

- rows wait: /api/health says the lake fails, /api/stats shows the rows buffered,
  never more than 2 x LAKE_FLUSH_ROWS (reading waits past that: memory stays bounded);
- the log says so in a few lines (one when it went away, reminders at most once a
  minute), not a line per failed attempt;
- after the server is back, the lake holds every source offset exactly once, the
  tables equal the expectation and the enriched topic holds each event once.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from devstack import stack
from devstack.s3 import S3Server
from tests.integration.checks import lake_offsets
from tests.integration.conftest import TEST_BUCKET, create_topic, random_free_port, wait_for
from tests.integration.test_faults import (
    PARTITIONS,
    api,
    build,
    committed_offsets,
    converge,
    end_offsets,
    enriched_exactly_once,
    lake_exactly_once,
    lake_failing,
    send_paced,
    split,
    web_up,
)

AWAY_S = 60
FLUSH_ROWS = 1_000  # the buffer's bound is twice this


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status_file:
        status = status_file.read()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) / 1024


@pytest.mark.slow
async def test_the_object_store_away_for_a_minute(
    bootstrap, pipeline_env, start_worker, tmp_path, unique
):
    server = S3Server(tmp_path / "s3", port=random_free_port(), binary_state=stack.state_dir())
    server.start(buckets=(TEST_BUCKET,))
    try:
        await outage(server, bootstrap, pipeline_env, start_worker, unique)
    finally:
        server.stop()


async def outage(server, bootstrap, env, start_worker, unique) -> None:
    from app.sinks.lake.location import resolve

    s3_lake = {"LAKE_URI": f"s3://{TEST_BUCKET}/{unique}/lake", **server.environment()}
    lake = resolve(s3_lake["LAKE_URI"], s3_lake)
    options = dict(lake.storage_options)
    per_partition, expected, total = build(seed=31, users=300, span_min=30)
    topic, group = env["INPUT_TOPIC"], env["APP_ID"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(
        IDLE_ADVANCE="1h", LAKE_DIR="", LAKE_FLUSH_ROWS=str(FLUSH_ROWS), **s3_lake
    )
    await web_up(worker)

    first, rest = split(per_partition, 1 / 4)
    n_first = sum(len(s) for s in first)
    await send_paced(bootstrap, topic, first, seconds=1)

    async def first_part_landed():
        assert worker.alive(), worker.tail()
        got = len(set(lake_offsets(lake.uri, options)))
        return True if got == n_first else f"{got}/{n_first} offsets"

    await wait_for(first_part_landed, timeout=60, interval=1, what="the first part in the lake")
    log_lines_before = len(worker.log.read_text(errors="replace").splitlines())
    rss_before = rss_mb(worker.proc.pid)

    server.stop()
    away_at = time.monotonic()
    buffered, rss = [], []
    try:
        await send_paced(bootstrap, topic, rest, seconds=3)
        await lake_failing(worker)
        detected_s = time.monotonic() - away_at
        while time.monotonic() - away_at < AWAY_S:
            assert worker.alive(), f"worker died with the object store away:\n{worker.tail()}"
            _, stats = await api(worker, "/api/stats")
            buffered.append(stats["lake"]["buffered_rows"])
            rss.append(rss_mb(worker.proc.pid))
            assert stats["lake"]["ok"] is False, stats["lake"]
            await asyncio.sleep(2)
        committed = await committed_offsets(bootstrap, group, topic)
        high = await end_offsets(bootstrap, topic)
        in_lake_while_away = len(set(lake_offsets(server.root / TEST_BUCKET / unique / "lake")))
    finally:
        server.start(buckets=(TEST_BUCKET,))
    back_at = time.monotonic()
    away_s = back_at - away_at
    during = worker.log.read_text(errors="replace").splitlines()[log_lines_before:]

    in_lake = await lake_exactly_once(worker, lake.uri, total, 180, options)
    landed_s = time.monotonic() - back_at
    await converge(worker, env["DATABASE_URL"], expected, timeout=180)
    events = await enriched_exactly_once(bootstrap, env["ENRICHED_TOPIC"], in_lake)
    log = worker.log.read_text(errors="replace")

    assert max(buffered) <= 2 * FLUSH_ROWS, buffered
    assert max(buffered) > 0, buffered
    assert in_lake_while_away == n_first, "the lake was written while the store was away"
    assert sum(committed.values()) < sum(high.values()), "reading did not wait at the bound"
    target = s3_lake["LAKE_URI"]
    assert f"lake ({target}) cannot be written since" in log, worker.tail()
    assert re.search(rf"lake \({re.escape(target)}\) is back after ", log), worker.tail()
    outage_lines = [line for line in during if "lake" in line]
    assert len(during) < 40, "\n".join(during[-40:])
    assert s3_lake["AWS_SECRET_ACCESS_KEY"] not in log
    print(
        f"\nobject store away {away_s:.0f}s: lake error visible after {detected_s:.1f}s; "
        f"rows buffered at most {max(buffered):,} (bound {2 * FLUSH_ROWS:,}); worker RSS "
        f"{rss_before:.0f} MB before, at most {max(rss):.0f} MB while away; "
        f"{len(during)} log lines while away ({len(outage_lines)} about the lake); input "
        f"committed {sum(committed.values()):,} of {sum(high.values()):,} while away; "
        f"after it was back all {len(in_lake):,} offsets in the lake once within "
        f"{landed_s:.1f}s; enriched {events:,} events each once; tables exact"
    )
