"""Throughput: the raw consume ceiling, one worker catching up the backlog with every
sink on (optionally under py-spy), and its recovery after a SIGKILL."""

from __future__ import annotations

import asyncio
import statistics
import time

from bench import kafka
from bench.catch_up import catch_up
from bench.harness import CpuShare, Harness
from bench.profile import Profiler, top_functions
from bench.worker import Worker
from devstack.process import say


async def ceiling(h: Harness, topic: str, n: int) -> dict:
    say("raw aiokafka consume + orjson ceiling, 3 runs...")
    runs = [await kafka.ceiling(h.bootstrap, topic, n) for _ in range(3)]
    return {
        "events_per_s_median": round(statistics.median(runs)),
        "runs": [round(r) for r in runs],
    }


async def pipeline_and_recovery(h: Harness, topic: str, loaded: dict, recover: bool) -> dict:
    n = loaded["events"]
    out: dict = {}
    async with h.database("pipeline") as db:
        worker = h.worker("pipeline", topic, db, LAKE_FLUSH="2s").start()
        profiler: list[Profiler] = []

        def profile() -> None:  # from the first input commit: start-up left out
            say(f"pipeline: py-spy recording the worker (pid {worker.pid})...")
            profiler.append(Profiler(worker.pid, h.out_path("-profile.txt")))

        try:
            say("pipeline: one worker, every sink on, catching up the backlog...")
            cpu = CpuShare(worker)
            out["pipeline"] = await catch_up(
                h.bootstrap,
                worker,
                topic,
                loaded,
                db,
                "pipeline",
                on_first=profile if h.args.profile else None,
            )
            share = cpu.pct()
            if share is not None:  # start-up included: the catch-up's cores in use
                out["pipeline"]["worker_cpu_pct_of_core"] = share
            if profiler:
                out["pipeline"]["profiled"] = True
                out["profile"] = profile_figures(profiler[0], h.args.profile_top)
            stats = await h.stats(worker)
            out["pipeline"]["dead_letters"] = stats["totals"]["dead_letters"]
            out["pipeline"]["late"] = stats["totals"]["late"]
            if recover:
                out["recovery"] = await recovery(h, worker, topic, n)
        finally:
            for p in profiler:
                p.stop()
            worker.stop()
    return out


def profile_figures(profiler: Profiler, top: int) -> dict:
    stacks = profiler.stop()
    if stacks is None:
        say(f"profile: py-spy wrote nothing; see {profiler.log}")
        return {"error": f"py-spy wrote no samples; see {profiler.log}"}
    functions = top_functions(stacks.read_text(), top)
    return {"stacks": str(stacks), "format": "collapsed stacks (py-spy raw)", **functions}


async def recovery(h: Harness, worker: Worker, topic: str, state_events: int) -> dict:
    """SIGKILL the caught-up worker, add fresh events, restart it on the same state."""
    say("recovery: SIGKILL, then restart on the same state directory...")
    before = await kafka.committed(h.bootstrap, worker.source_group, topic)
    worker.kill()
    fresh = h.args.recovery_events
    await kafka.append(h.bootstrap, topic, fresh, h.args.users)
    worker.start()
    ends = await kafka.end_offsets(h.bootstrap, topic)
    resumed_at = None
    while resumed_at is None:
        await asyncio.sleep(0.2)
        worker.check_alive()
        now = await kafka.committed(h.bootstrap, worker.source_group, topic)
        if any(now.get(tp, 0) > before.get(tp, 0) for tp in ends):
            resumed_at = time.monotonic()
    await worker.wait_committed(h.bootstrap, topic, ends, "recovery")
    caught_up = time.monotonic()
    return {
        "state_of_events": state_events,
        "fresh_events_after_kill": fresh,
        "first_commit_after_restart_s": round(resumed_at - worker.started, 1),
        "fresh_events_committed_after_s": round(caught_up - worker.started, 1),
    }
