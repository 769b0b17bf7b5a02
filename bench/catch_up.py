"""A worker (or a group of them) catching up a preloaded backlog, timed until
PostgreSQL holds all of it: the figure the throughput sections report."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from bench import kafka
from bench.worker import Worker, WorkerGroup
from devstack.process import say

STALL_S = 120.0  # PostgreSQL not moving this long fails the run
GIVE_UP_S = 3600.0


async def catch_up(
    bootstrap: str,
    worker: Worker | WorkerGroup,
    topic: str,
    loaded: dict,
    db: str,
    label: str,
    on_first=None,
) -> dict:
    """Run until PostgreSQL holds the whole backlog: its page views add up to the
    backlog's on-time page views (counted by the preload, without the pipeline's
    code). The source stage's own commit to the end is timed on the way."""
    n, views = loaded["events"], loaded["on_time_page_views"]
    ends = await kafka.end_offsets(bootstrap, topic)
    began = worker.started
    source = await worker.wait_committed(bootstrap, topic, ends, label, on_first=on_first)
    await _until_postgres_holds(worker, db, views, label, began)
    done = time.monotonic()
    # From the first input commit seen, so the worker's start-up is excluded; a
    # backlog done before a second look at the commits has no such span.
    steady = source["first_count"] < n and done > source["first_at"]
    including_start = round(n / (done - began))
    source_s = source["done_at"] - source["first_at"]
    return {
        "events": n,
        "page_views_in_postgres": views,
        "seconds_including_start": round(done - began, 1),
        "events_per_s_including_start": including_start,
        # to PostgreSQL complete: the figure that counts
        "events_per_s": (
            round((n - source["first_count"]) / (done - source["first_at"]))
            if steady
            else including_start
        ),
        "events_per_s_from": "first commit" if steady else "start (backlog too small)",
        "source_stage_events_per_s": (
            round((n - source["first_count"]) / source_s) if source_s > 0 else None
        ),
        "postgres_complete_after_source_s": round(done - source["done_at"], 1),
        "rss_peak_mb": round(worker.rss_peak_mb() or 0, 1),
        "rss_after_mb": round(worker.rss_mb() or 0, 1),  # caught up, everything flushed
    }


async def _until_postgres_holds(
    worker: Worker | WorkerGroup, db: str, views: int, label: str, began: float
) -> None:
    conn = await asyncpg.connect(db)
    last_print = 0.0
    last_have, moved_at = None, time.monotonic()
    try:
        while True:
            worker.check_alive()
            try:
                have = await conn.fetchval("SELECT sum(view_count) FROM page_view_counts")
            except asyncpg.UndefinedTableError:
                have = None
            now = time.monotonic()
            if have == views:
                return
            if have is not None and have > views:
                raise RuntimeError(f"{label}: {have} page views in PostgreSQL, {views} sent")
            if have != last_have:
                last_have, moved_at = have, now
            elif now - moved_at > STALL_S:  # a stage stopped moving: say so, loudly
                raise TimeoutError(
                    f"{label}: PostgreSQL stood still at {have or 0:,}/{views:,} page "
                    f"views for {STALL_S:.0f} s after the source committed the backlog"
                )
            if now - last_print >= 5:
                last_print = now
                say(f"  {label}: {have or 0:,}/{views:,} page views in PostgreSQL")
            if now - began > GIVE_UP_S:
                raise TimeoutError(f"{label}: {have}/{views} page views after an hour")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
