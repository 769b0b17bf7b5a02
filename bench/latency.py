"""Latency under steady load: produce -> enriched record visible, and event -> its
PostgreSQL window row counting it (freshness)."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import defaultdict

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.kafka import _partitions, create_topic
from producer.simulator import Simulator

WINDOW_MS = 60_000
POLL_S = 0.05


def percentiles(values: list[float], points=(50, 95, 99)) -> dict[str, float | None]:
    if not values:
        return {f"p{p}": None for p in points} | {"max": None}
    ordered = sorted(values)
    # nearest rank: the smallest value with at least p% of the values at or below it
    out = {f"p{p}": ordered[max(0, math.ceil(len(ordered) * p / 100) - 1)] for p in points}
    out["max"] = ordered[-1]
    return {k: round(v * 1000, 1) for k, v in out.items()}  # ms


def bucket_percentiles(before: dict, after: dict, points=(50, 99)) -> dict:
    """Percentiles (ms) of what a worker histogram (app/stats.py's snapshot) counted
    between two snapshots, each as the upper bound of the bucket it falls in, and the
    count."""
    bounds = [bucket[0] for bucket in after["buckets"]]
    counts = [b[1] - a[1] for a, b in zip(before["buckets"], after["buckets"], strict=True)]
    total = counts[-1]
    out: dict = {"count": total}
    for p in points:
        rank = max(1, math.ceil(total * p / 100))
        bound = next((b for b, c in zip(bounds, counts, strict=True) if c >= rank), "+Inf")
        out[f"p{p}_at_most_ms"] = None if bound == "+Inf" else bound * 1000
    return out


def within_2x_of_first(by_tenth: list[float | None]) -> list[bool] | None:
    """Whether each tenth's p50 is at most twice the first tenth's (None: no first)."""
    first = by_tenth[0] if by_tenth else None
    if not first:
        return None
    return [v is not None and v <= 2 * first for v in by_tenth]


class Probe:
    """Sends paced events stamped with wall time and records when each one shows up."""

    def __init__(self, users: int, record: bool = True) -> None:
        self.record = record  # False: send only (a soak's hours of events)
        self.sim = iter(
            Simulator(users, seed=7, start_ms=0, step_ms=0, late_ratio=0.0, jitter_ms=0)
        )
        self.seq = 0
        self.sent_at: dict[str, float] = {}
        self.enriched_at: dict[str, float] = {}
        self.appended_at: dict[str, float] = {}  # the enriched record's CreateTime
        self.acked_at: dict[str, float] = {}  # the broker acknowledged the probe's send
        # (window_start_ms, page) -> send times of its page views, in send order
        self.views: dict[tuple[int, str], list[float]] = defaultdict(list)
        self.seen_count: dict[tuple[int, str], int] = {}
        self.freshness: list[float] = []
        # rows counted before this probe sent anything (the warm-up's page views)
        self.baseline: dict[tuple[int, str], int] = {}

    def next_event(self) -> tuple[bytes, bytes, str]:
        item = next(self.sim)
        while isinstance(item.value, bytes):
            item = next(self.sim)
        self.seq += 1
        now = time.time()
        event = dict(item.value)
        event["event_id"] = event_id = f"L{self.seq:09d}"
        event["event_time"] = int(now * 1000)
        if not self.record:
            return orjson.dumps(event), item.user_id.encode(), event_id
        self.sent_at[event_id] = now
        if event["event_type"] == "page_view":
            window = event["event_time"] // WINDOW_MS * WINDOW_MS
            self.views[(window, event["page_url"])].append(now)
        return orjson.dumps(event), item.user_id.encode(), event_id

    def saw_row(self, window_ms: int, page: str, count: int, at: float) -> None:
        count -= self.baseline.get((window_ms, page), 0)
        before = self.seen_count.get((window_ms, page), 0)
        if count <= before:
            return
        self.seen_count[(window_ms, page)] = count
        sent = self.views.get((window_ms, page), [])
        for t in sent[before : min(count, len(sent))]:
            self.freshness.append(at - t)


async def produce(bootstrap: str, topic: str, probe: Probe, rate: float, seconds: float) -> int:
    """Send `rate` events/s of `probe` for `seconds`; the count sent."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks=1)
    await producer.start()
    tick = 0.01
    began = time.monotonic()
    sent = 0
    try:
        while (elapsed := time.monotonic() - began) < seconds:
            due = int(elapsed * rate) + 1
            while sent < due:
                value, key, event_id = probe.next_event()
                delivered = await producer.send(topic, value, key=key)
                if probe.record:
                    delivered.add_done_callback(
                        lambda _, e=event_id: probe.acked_at.__setitem__(e, time.time())
                    )
                sent += 1
            await asyncio.sleep(tick)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _watch_enriched(bootstrap: str, topic: str, probe: Probe, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="latest",
        fetch_max_wait_ms=10,
        isolation_level="read_committed",  # what the contract promises a reader
    )
    await consumer.start()
    try:
        consumer.assign(await _partitions(consumer, topic))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for records in batch.values():
                for record in records:
                    event_id = orjson.loads(record.value).get("event_id")
                    if event_id in probe.sent_at and event_id not in probe.enriched_at:
                        probe.enriched_at[event_id] = now
                        probe.appended_at[event_id] = record.timestamp / 1000
    finally:
        await consumer.stop()


ROWS = (
    "SELECT (extract(epoch FROM window_start) * 1000)::bigint AS w, page_url, view_count "
    "FROM page_view_counts"
)


async def _page_view_counts(database_url: str) -> dict[tuple[int, str], int]:
    conn = await asyncpg.connect(database_url)
    try:
        return {(r["w"], r["page_url"]): r["view_count"] for r in await conn.fetch(ROWS)}
    finally:
        await conn.close()


async def _watch_rows(database_url: str, probe: Probe, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        while not stop.is_set():
            rows = await conn.fetch(ROWS)
            now = time.time()
            for row in rows:
                probe.saw_row(row["w"], row["page_url"], row["view_count"], now)
            await asyncio.sleep(POLL_S)
    finally:
        await conn.close()


async def measure(
    bootstrap: str,
    database_url: str,
    topic: str,
    enriched_topic: str,
    partitions: int,
    worker,
    rate: float,
    seconds: float,
    users: int,
    worker_stats=None,
) -> dict:
    """`worker` is a started Worker reading `topic`; returns latency and freshness in ms.
    `worker_stats`: an async callable returning the worker's /api/stats."""
    await create_topic(bootstrap, enriched_topic, partitions)
    warm = Probe(users)
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch_enriched(bootstrap, enriched_topic, warm, stop))
    # Warm up until the worker has its partitions and answers within a second.
    began = time.monotonic()
    while True:
        worker.check_alive()
        await produce(bootstrap, topic, warm, 50, 1.0)
        recent = [warm.enriched_at[e] - warm.sent_at[e] for e in list(warm.enriched_at)[-20:]]
        if len(warm.enriched_at) > 40 and recent and max(recent) < 1.0:
            break
        if time.monotonic() - began > 120:
            raise TimeoutError("the worker did not start answering within 120 s")
    stop.set()
    await watcher
    print(f"  latency: worker warm after {time.monotonic() - began:.1f}s", file=sys.stderr)

    # Every warm-up page view in PostgreSQL first, so the probe's counts start from there.
    warm_views = sum(len(sent) for sent in warm.views.values())
    deadline = time.monotonic() + 30
    while sum((baseline := await _page_view_counts(database_url)).values()) < warm_views:
        if time.monotonic() > deadline:
            raise TimeoutError("warm-up page views did not all reach PostgreSQL in 30 s")
        await asyncio.sleep(0.2)
    probe = Probe(users)
    probe.sim = warm.sim  # same users, sessions carry on
    probe.baseline = baseline
    stop = asyncio.Event()
    watchers = [
        asyncio.create_task(_watch_enriched(bootstrap, enriched_topic, probe, stop)),
        asyncio.create_task(_watch_rows(database_url, probe, stop)),
    ]
    await asyncio.sleep(0.5)  # the enriched watcher is at the end of the topic
    print(f"  latency: {rate:.0f} events/s for {seconds:.0f}s...", file=sys.stderr)
    cpu_before, cpu_began = worker.cpu_seconds(), time.monotonic()
    lag_before = (await worker_stats())["event_loop_lag"] if worker_stats else None
    sent = await produce(bootstrap, topic, probe, rate, seconds)
    sent_s = time.monotonic()
    cpu_after = worker.cpu_seconds()
    lag_after = (await worker_stats())["event_loop_lag"] if worker_stats else None
    cpu = (
        None
        if cpu_before is None or cpu_after is None
        else round((cpu_after - cpu_before) / (sent_s - cpu_began) * 100, 1)
    )
    expected_views = sum(len(v) for v in probe.views.values())
    while time.monotonic() - sent_s < 15 and (
        len(probe.enriched_at) < sent or len(probe.freshness) < expected_views
    ):
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*watchers)
    worker.check_alive()
    latencies = [probe.enriched_at[e] - probe.sent_at[e] for e in probe.enriched_at]
    # p50 per tenth of the run: a rising line means the worker fell behind the rate
    start = min(probe.sent_at.values(), default=0)
    slices: list[list[float]] = [[] for _ in range(10)]
    for e, seen in probe.enriched_at.items():
        sent_at = probe.sent_at[e]
        slices[min(9, int((sent_at - start) / seconds * 10))].append(seen - sent_at)
    by_tenth = [percentiles(x)["p50"] for x in slices]
    within = within_2x_of_first(by_tenth)
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "sent": sent,
        "achieved_rate": round(sent / seconds),
        "enriched_seen": len(latencies),
        "produce_to_enriched_ms": percentiles(latencies),
        # when the worker's producer stamped the enriched record (ms resolution):
        # the part of the latency that is the worker's, without the reader's fetch
        "produce_to_enriched_append_ms": percentiles(
            [probe.appended_at[e] - probe.sent_at[e] for e in probe.appended_at]
        ),
        # the probe's own producer, send() to broker ack: a share of every figure above
        "produce_ack_ms": percentiles(
            [probe.acked_at[e] - probe.sent_at[e] for e in probe.acked_at]
        ),
        "produce_to_enriched_p50_ms_by_tenth": by_tenth,
        # each tenth's p50 at most twice the first tenth's: the worker kept up
        "tenths_within_2x_of_first": within,
        "stalled": None if within is None else not all(within),
        # the worker's user + system CPU while the probe sent, as % of one core
        "worker_cpu_pct_of_core": cpu,
        # how late the worker's loop woke a 20 ms sleeper while the probe sent: a
        # commit that is due waits this long for whatever holds the loop
        "worker_loop_lag_ms": lag_before and bucket_percentiles(lag_before, lag_after),
        "page_views_sent": expected_views,
        "page_views_in_postgres": len(probe.freshness),
        "postgres_freshness_ms": percentiles(probe.freshness),
        "freshness_poll_interval_ms": POLL_S * 1000,
    }
