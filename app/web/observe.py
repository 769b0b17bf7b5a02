"""What this worker knows about itself: the `/api/stats` payload, also behind `/metrics`.

Only the partitions this worker owns (and counters since it started): the whole
pipeline's results are in PostgreSQL, and each worker answers for its own share.
Built from the processors' existing attributes; nothing here changes them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from datetime import UTC, datetime

from faust.types import TP

from app.timeutil import utc_datetime
from app.web.queries import iso
from tables.watermark import NO_TIME

SCOPE = (
    "this worker only: the source partitions of the input topic and the user-keyed "
    "partitions assigned to it, with counters since it started; window and session "
    "results of the whole pipeline are under /api/page-views, /api/active-users and "
    "/api/sessions"
)
POSITION_TIMEOUT_S = 2.0
STARTED_WALL = time.time()


def time_fields(name: str, ms: int | None) -> dict:
    """`name` as ISO-8601 and `name_ms` as epoch milliseconds; both None when unknown."""
    if ms is None or ms == NO_TIME:
        return {name: None, f"{name}_ms": None}
    return {name: iso(utc_datetime(ms)), f"{name}_ms": ms}


def epoch_fields(name: str, seconds: float | None) -> dict:
    """`name` as ISO-8601 and `name_s` as wall-clock epoch seconds; both None when unset."""
    if seconds is None:
        return {name: None, f"{name}_s": None}
    return {name: iso(datetime.fromtimestamp(seconds, UTC)), f"{name}_s": round(seconds, 3)}


def worker_identity(settings) -> dict:
    host = socket.gethostname()
    return {
        "id": f"{host}:{settings.web_port}",
        "host": host,
        "port": settings.web_port,
        "bind": f"{settings.web_host}:{settings.web_port}",
        "app_id": settings.app_id,
        "pid": os.getpid(),
        # "uvloop" by default; "asyncio" under `-L aio` / FAUST_LOOP=aio
        "event_loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "started_at": iso(datetime.fromtimestamp(STARTED_WALL, UTC)),
        "uptime_s": round(time.time() - STARTED_WALL, 1),
    }


async def consumer_offsets(consumer, tps: list[TP]) -> dict[TP, tuple[int | None, int | None]]:
    """(highwater, position) per partition from the worker's consumer; None when unknown."""

    async def position(tp: TP) -> int | None:
        try:
            return await asyncio.wait_for(consumer.position(tp), POSITION_TIMEOUT_S)
        except Exception:  # not assigned (any more), not fetched yet, consumer stopping
            return None

    positions = await asyncio.gather(*(position(tp) for tp in tps))
    result = {}
    for tp, pos in zip(tps, positions, strict=True):
        try:
            high = consumer.highwater(tp)
        except Exception:
            high = None
        result[tp] = (high, pos)
    return result


def _lag(high: int | None, pos: int | None) -> int | None:
    return None if high is None or pos is None else max(0, high - pos)


def assignment(consumer) -> set[TP]:
    try:
        return set(consumer.assignment())
    except Exception:  # consumer not started yet
        return set()


def assigned_partitions(worker) -> int:
    """Source and user-keyed partitions this worker holds now."""
    return sum(
        len(assignment(stage.consumer))
        for stage in (worker.source, worker.stateful)
        if stage.consumer is not None
    )


def sink_fields(sink) -> dict:
    """One sink's `SinkHealth` (app/sinks/contract.py) as `/api/stats` shows it."""
    health = sink.health
    return {
        "target": health.target,
        "ok": health.ok,
        "rows_written": health.rows_written,
        "writes": health.writes,
        "errors": health.errors,
        "consecutive_errors": health.consecutive_errors,
        **epoch_fields("failing_since", health.failing_since),
        **epoch_fields("last_error_at", health.last_error_at),
        **epoch_fields("last_success_at", health.last_success_at),
        "last_error": health.last_error,
        "last_write_s": health.last_write_s,
        "pending_rows": sink.pending_rows(),
    }


def stage_fields(stage) -> dict:
    """A stage's loop (app/commit/stage.py) and its partitions that make no progress."""
    return {
        "alive": stage.alive,
        "loop_errors": stage.loop_errors,
        "last_loop_error": stage.last_loop_error,
        "last_turn_age_s": round(time.monotonic() - stage.last_turn, 3),
        "unopened_partitions": sorted(stage.unopened),
        # assigned here and not opened for longer than STUCK_AFTER (opening fails)
        "not_opened": [{"partition": p, "for_s": s} for p, s in stage.not_opened()],
        "stuck_partitions": [
            {"partition": s.partition, "offset": s.offset, "lag": s.lag, "for_s": s.for_s}
            for s in stage.progress.stuck()
        ],
    }


def rejected(worker) -> list[dict]:
    """Rows and records sinks set aside as never writable, by sink and reason."""
    counts = [
        {"sink": sink, "reason": reason, "count": n}
        for (sink, reason), n in worker.stats.rejected.items()
    ]
    counts += [
        {"sink": "postgres", "reason": sqlstate, "count": n}
        for sqlstate, n in worker.postgres.rejected.items()
    ]
    return sorted(counts, key=lambda c: (c["sink"], c["reason"]))


async def snapshot(worker) -> dict:
    """The `/api/stats` document."""
    settings, stats = worker.settings, worker.stats
    source, stateful, sink = worker.source, worker.stateful, worker.postgres
    lake = source.lake.health
    user_assigned = assignment(stateful.consumer) if stateful.consumer else set()
    source_assigned = assignment(source.consumer) if source.consumer else set()
    source_parts = sorted(
        tp.partition for tp in source_assigned if tp.topic == settings.input_topic
    )
    user_parts = sorted(tp.partition for tp in user_assigned if tp.topic == settings.internal_topic)
    offsets = {}
    if source.consumer is not None:
        offsets.update(
            await consumer_offsets(
                source.consumer, [TP(settings.input_topic, p) for p in source_parts]
            )
        )
    if stateful.consumer is not None:
        offsets.update(
            await consumer_offsets(
                stateful.consumer, [TP(settings.internal_topic, p) for p in user_parts]
            )
        )

    sources = []
    for partition in sorted(set(source_parts) | set(stats.partitions)):
        counted = stats.partitions.get(partition)
        task = source.tasks.get(partition)
        src = task.reader if task is not None else None
        if src is not None:
            stream_time, watermark = src.clock.stream_time, src.clock.watermark
        elif counted is not None:
            stream_time, watermark = counted.stream_time, counted.watermark
        else:
            stream_time = watermark = None
        high, pos = offsets.get(TP(settings.input_topic, partition), (None, None))
        committed = task.committed_at if task is not None else None
        sources.append(
            {
                "partition": partition,
                "assigned": partition in source_parts,
                **time_fields("stream_time", stream_time),
                **time_fields("watermark", watermark),
                "highwater": high,
                "position": pos,
                "consumer_lag": _lag(high, pos),
                "last_read_offset": None if src is None or src.last_read < 0 else src.last_read,
                "committed_offset": committed[0] if committed else None,
                "events": counted.events if counted else 0,
                "late": counted.late if counted else 0,
                "dead_letters": counted.dead_letters if counted else 0,
            }
        )

    user_partitions = []
    for partition in sorted(set(user_parts) | set(stateful.tasks)):
        part = stateful.tasks.get(partition)
        agg = part.aggregator if part is not None else None
        high, pos = offsets.get(TP(settings.internal_topic, partition), (None, None))
        entry = {"partition": partition, "assigned": partition in user_parts, "loaded": bool(agg)}
        entry.update(time_fields("merged_watermark", agg.watermark if agg else None))
        entry.update(
            {
                "open_sessions": (
                    sum(1 for u in agg.users.values() if u.session is not None) if agg else 0
                ),
                "users_in_state": len(agg.users) if agg else 0,
                "windows_in_state": (
                    sum(len(w.counts) for w in agg.windows.values()) if agg else 0
                ),
                "final_rows_waiting": len(part.outbox) if part else 0,
                "late_at_merge": agg.late_at_merge if agg else 0,
                "highwater": high,
                "position": pos,
                "consumer_lag": _lag(high, pos),
                # the state's own position: the next input offset it does not cover
                "state_input_offset": part.input_next if part else None,
                "committed_input_offset": part.committed_input if part else None,
                "changelog_offset": part.changelog_next if part else None,
                "restored_changelog_records": part.restored_records if part else None,
                "skipped_records": part.skipped_records if part else 0,
                "restore_seconds": round(part.restore_seconds, 3) if part else None,
            }
        )
        user_partitions.append(entry)

    totals = dict(stats.totals)
    totals["records"] = totals["events"] + totals["dead_letters"]
    totals["transactions_committed"] = source.commits
    totals["transactions_aborted"] = source.aborts
    totals["commits_refused_by_fence"] = source.refused_by_fence
    totals["stateful_transactions_committed"] = stateful.commits
    totals["stateful_transactions_aborted"] = stateful.aborts
    totals["stateful_commits_refused_by_fence"] = stateful.refused_by_fence
    totals["stateful_restores"] = stateful.restores
    totals["postgres_partitions_refused_by_fence"] = sink.refused_partitions
    totals["transaction_verification_retries"] = source.verification_retries.count
    totals["late_at_merge"] = sum(p["late_at_merge"] for p in user_partitions)
    totals["open_sessions"] = sum(p["open_sessions"] for p in user_partitions)
    return {
        "scope": SCOPE,
        "worker": worker_identity(settings),
        "rebalancing": worker.source.rebalancing or worker.stateful.rebalancing,
        "fenced_partitions": sorted(source.fenced),
        "fenced_user_partitions": sorted(stateful.fenced),
        "latency": stats.latency.snapshot(),
        "event_loop_lag": stats.loop_lag.snapshot(),
        "totals": totals,
        "dead_letter_reasons": dict(sorted(stats.dead_letter_reasons.items())),
        # rows a sink refused as data, set aside (PostgreSQL: in rejected_rows)
        "rejected": rejected(worker),
        "stages": {"source": stage_fields(source), "stateful": stage_fields(stateful)},
        "sources": sources,
        "user_partitions": user_partitions,
        # PostgreSQL and the lake as before; every sink alike under "sinks"
        "sink": {
            **sink_fields(sink),  # target: DATABASE_URL, password masked
            "connected": sink.pool is not None,
            "ok": sink.pool is not None and sink.health.ok,
            "last_write_latency_s": sink.health.last_write_s,
        },
        "lake": {
            "dir": settings.lake.target,  # a folder or a URI; never the storage options
            "ok": lake.ok,
            "rows": lake.rows_written,
            "errors": lake.errors,
            "last_error": None if lake.ok else lake.last_error,
            "last_flush_s": lake.last_write_s,
            "commits": lake.writes,
            "buffered_rows": source.lake.pending_rows(),
        },
        "sinks": {s.name: sink_fields(s) for s in worker.sinks()},
        # Kafka, PostgreSQL, the lake: up or away since when, and the library log lines
        # left out while away (app/outages.py)
        "dependencies": worker.outages.snapshot(),
    }
