"""Memory: peak RSS of one worker catching up a backlog of many distinct users,
optionally under memray."""

from __future__ import annotations

from bench.catch_up import catch_up
from bench.harness import Harness
from devstack.process import say

MEMRAY = ["-m", "memray", "run", "--native", "--trace-python-allocators", "--aggregate"]


async def memory(h: Harness, users: int, events: int) -> dict:
    topic, loaded = await h.backlog("memory", events, users)
    async with h.database("memory") as db:
        worker = h.worker("memory", topic, db, LAKE_FLUSH="2s")
        if h.args.memray:
            capture = h.out_path("-memray.bin")
            capture.unlink(missing_ok=True)
            worker.wrap = [*MEMRAY, "-o", str(capture)]
            say(f"memory: under memray; then `python -m bench.memray_top {capture}`")
        worker.start()
        try:
            say(f"memory: one worker over {loaded['distinct_users']:,} distinct users...")
            run = await catch_up(h.bootstrap, worker, topic, loaded, db, "memory")
        finally:
            worker.stop()
    return {"distinct_users": loaded["distinct_users"], **run}
