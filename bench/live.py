"""Live load: latency at a steady rate (bench/latency.py measures it), and the soak,
RSS and consumer lag sampled every SOAK_SAMPLE_S at a steady rate for minutes."""

from __future__ import annotations

import asyncio
import time

from bench import kafka, latency
from bench import soak as soak_figures
from bench.harness import CpuShare, Harness
from bench.worker import Worker
from devstack.process import say

SOAK_SAMPLE_S = 10
WARM_UP_S = 120


async def live_latency(h: Harness, name: str, rate: float, seconds: float) -> dict:
    topic = h.topic(name)
    await kafka.create_topic(h.bootstrap, topic, h.args.partitions)
    async with h.database(name) as db:
        worker = h.worker(name, topic, db, IDLE_ADVANCE="2s").start()
        try:
            result = await latency.measure(
                h.bootstrap,
                db,
                topic,
                f"{topic}-enriched",
                h.args.partitions,
                worker,
                rate=rate,
                seconds=seconds,
                users=h.args.users,
                worker_stats=lambda: h.stats(worker),
            )
            result["rss_peak_mb"] = round(worker.rss_peak_mb() or 0, 1)
            return result
        finally:
            worker.stop()


async def soak(h: Harness) -> dict:
    """Steady load for --soak-minutes; RSS and consumer lag every 10 s should be flat."""
    args = h.args
    rate, seconds = args.soak_rate, args.soak_minutes * 60
    topic = h.topic("soak")
    await kafka.create_topic(h.bootstrap, topic, args.partitions)
    async with h.database("soak") as db:
        worker = h.worker("soak", topic, db, IDLE_ADVANCE="2s")
        if args.soak_variant != "as-shipped":
            worker.variant = args.soak_variant
        worker.start()
        try:
            probe = latency.Probe(args.users, record=False)
            await _warm_up(h, worker, topic, probe)
            say(f"soak: {rate:,.0f} events/s for {args.soak_minutes:g} min...")
            cpu = CpuShare(worker)
            sending = asyncio.create_task(latency.produce(h.bootstrap, topic, probe, rate, seconds))
            samples = []
            while not sending.done():
                await asyncio.wait({sending}, timeout=SOAK_SAMPLE_S)
                worker.check_alive()
                samples.append(await _sample(h, worker, topic, cpu.began))
            sent = await sending
            cpu_pct = cpu.pct()
            rss_peak = worker.rss_peak_mb()
        finally:
            worker.stop()

    def spread(key: str) -> dict:
        values = [s[key] for s in samples]
        return {"first": values[0], "last": values[-1], "max": max(values)}

    return {
        "minutes": args.soak_minutes,
        "variant": args.soak_variant,
        "rate_events_per_s": rate,
        "rss_growth_after_minute_5": soak_figures.rss_growth(samples),
        "rss_mb_median_per_5_min": soak_figures.rss_medians(samples),
        "sent": sent,
        "sample_every_s": SOAK_SAMPLE_S,
        "rss_mb": spread("rss_mb"),
        "source_lag": spread("source_lag"),
        "merge_lag": spread("merge_lag"),
        "source_commit_lag": spread("source_commit_lag"),
        "merge_commit_lag": spread("merge_commit_lag"),
        "rss_peak_mb": round(rss_peak or 0, 1),
        "worker_cpu_pct_of_core": cpu_pct,
        "samples": samples,
    }


async def _warm_up(h: Harness, worker: Worker, topic: str, probe: latency.Probe) -> None:
    """Until the worker has its partitions and commits what it reads."""
    began = time.monotonic()
    while True:
        worker.check_alive()
        await latency.produce(h.bootstrap, topic, probe, 50, 1.0)
        await asyncio.sleep(1.0)  # a commit interval or more
        lags = await h.lags(worker, topic)
        if not lags["source_lag"]:
            return
        if time.monotonic() - began > WARM_UP_S:
            raise TimeoutError(f"soak: the worker did not catch up in {WARM_UP_S} s: {lags}")


async def _sample(h: Harness, worker: Worker, topic: str, began: float) -> dict:
    stats = await h.stats(worker)
    committed = await h.lags(worker, topic)
    sample = {
        "t_s": round(time.monotonic() - began),
        "rss_mb": round(worker.rss_mb() or 0, 1),
        # highwater - position of the worker's consumers (/api/stats)
        "source_lag": sum(p["consumer_lag"] or 0 for p in stats["sources"]),
        "merge_lag": sum(p["consumer_lag"] or 0 for p in stats["user_partitions"]),
        # end offset - the group's committed offset
        "source_commit_lag": committed["source_lag"],
        "merge_commit_lag": committed["merge_lag"],
    }
    say(
        f"  soak {sample['t_s']:>5} s: RSS {sample['rss_mb']:,.0f} MB, lag "
        f"{sample['source_lag']:,} (source) {sample['merge_lag']:,} (stateful), "
        f"uncommitted {committed['source_lag']:,} / {committed['merge_lag']:,}"
    )
    return sample
