"""Scale-out: the backlog caught up by several workers of one app on this machine,
with the lake in a folder and on devstack's S3 server."""

from __future__ import annotations

from bench.catch_up import catch_up
from bench.harness import CpuShare, Harness
from bench.worker import WorkerGroup
from devstack import stack
from devstack.process import say
from devstack.s3 import VERSION as S3_VERSION


async def scaleout(h: Harness, topic: str, loaded: dict, count: int) -> dict:
    """The backlog caught up by `count` workers of one app started together on this
    machine: what more processes add to the one-worker catch-up. With `--scaleout-s3`
    (the default), the same with the lake on devstack's S3 server, by one worker and
    by `count`, each worker with its own state folder, the lake shared only through
    the S3 server."""
    lake = {"LAKE_DIR": str(h.work / "scaleout-lake")}
    out = await group_catch_up(h, topic, loaded, count, "scaleout", lake)
    if h.args.scaleout_s3:
        s3 = stack.ensure_s3(buckets=("bench",))
        out["s3"] = {"server": f"versitygw {S3_VERSION} at {s3.endpoint}"}
        for n, key in ((1, "one_worker"), (count, "workers")):
            on_s3 = {
                "LAKE_URI": f"s3://bench/{h.run_id}-{n}/lake",
                "LAKE_DIR": "",
                **s3.environment(),
            }
            name = f"scaleout-s3-{n}"
            out["s3"][key] = await group_catch_up(h, topic, loaded, n, name, on_s3)
    return out


async def group_catch_up(
    h: Harness, topic: str, loaded: dict, count: int, name: str, lake: dict[str, str]
) -> dict:
    """`count` workers of one app (settings `lake` for the lake) catch up the backlog."""
    async with h.database(name) as db:
        app_id = f"bench-{h.run_id}-{name}"
        workers = WorkerGroup(
            [
                h.worker(f"{name}-{i}", topic, db, APP_ID=app_id, LAKE_FLUSH="2s", **lake)
                for i in range(count)
            ]
        )
        try:
            workers.start()
            say(f"{name}: {count} worker(s) of one app catching up the backlog...")
            cpu = CpuShare(workers)
            out = await catch_up(h.bootstrap, workers, topic, loaded, db, name)
            share = cpu.pct()
            if share is not None:
                out["workers_cpu_pct_of_core"] = share
            out["workers"] = count
        finally:
            workers.stop()
    return out
