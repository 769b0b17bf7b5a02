"""Helpers for tests/integration/test_web.py: a scenario with bad records, sending it,
reading the result tables, calling the worker's API and parsing Prometheus text."""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import orjson
from aiokafka import AIOKafkaProducer

from tests.integration import scenario
from tests.integration.checks import read_rows
from tests.integration.conftest import wait_for

PARTITIONS = 4
MIN = scenario.MIN
METRIC_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$"
)
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def iso(ms: int) -> str:
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def bad_records() -> list[tuple[bytes, str]]:
    future = iso(int(time.time() * 1000) + 3_600_000)
    return [
        (b"not json", "invalid_json"),
        (b"\xff\xfe\x00", "not_utf8"),
        (b"[1, 2]", "not_object"),
        (b'{"user_id": "u1", "event_type": "page_view", "page_url": "/x"}', "missing_field"),
        (
            b'{"event_time": "2026-01-01T00:00:00Z", "user_id": "u1", "event_type": "buy"}',
            "unknown_event_type",
        ),
        (
            orjson.dumps(
                {"event_time": future, "user_id": "u1", "event_type": "click", "page_url": "/x"}
            ),
            "future_event_time",
        ),
    ]


@dataclass
class Plan:
    """What is sent per source partition (scenario events and bad records), and its truth."""

    sends: list[list]  # scenario.Sent or raw bytes, in send order
    expected: scenario.Expected
    valid: list[int]
    late: list[int]
    bad: list[int]
    reasons: Counter
    newest_minute: int

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.sends)


def make_plan(users: int, seed: int, span_min: int) -> Plan:
    start_ms = (int(time.time() * 1000) - 3 * 3_600_000) // 1000 * 1000 + 123
    per_partition = scenario.build(
        seed=seed,
        users=users,
        partitions=PARTITIONS,
        start_ms=start_ms,
        span_ms=span_min * MIN,
        keyed=True,
    )
    expected = scenario.expect(per_partition)
    late = [scenario.expect([seq]).late for seq in per_partition]
    assert sum(late) == expected.late > 0
    rng = random.Random(seed)
    reasons: Counter = Counter()
    sends = []
    for seq in per_partition:
        mixed: list = list(seq)
        for value, reason in bad_records():
            mixed.insert(rng.randrange(len(mixed)), value)  # always before the closer
            reasons[reason] += 1
        sends.append(mixed)
    newest = max(e.t for seq in per_partition for e in seq) // MIN * MIN
    return Plan(
        sends=sends,
        expected=expected,
        valid=[len(seq) for seq in per_partition],
        late=late,
        bad=[len(s) - len(seq) for s, seq in zip(sends, per_partition, strict=True)],
        reasons=reasons,
        newest_minute=newest,
    )


async def produce(bootstrap: str, topic: str, sends: list[list], pace_s: float = 0) -> None:
    """Send every partition's sequence in order, interleaving partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        queues = [list(seq) for seq in sends]
        n = 0
        while any(queues):
            for p, queue in enumerate(queues):
                if not queue:
                    continue
                item = queue.pop(0)
                if isinstance(item, bytes):
                    await producer.send(topic, item, key=b"bad", partition=p)
                else:
                    value = orjson.dumps(item.value())
                    await producer.send(topic, value, key=item.user.encode(), partition=p)
                n += 1
                if pace_s and n % 20 == 0:
                    await producer.flush()
                    await asyncio.sleep(pace_s)
        await producer.flush()
    finally:
        await producer.stop()


async def converge(worker, url: str, expected: scenario.Expected) -> scenario.Expected:
    async def check():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        got = await read_rows(url)
        if got is None:
            return "no tables yet"
        for name in ("page_views", "active_users", "sessions"):
            want, have = getattr(expected, name), getattr(got, name)
            if want != have:
                return f"{name}: {len(set(want.items()) ^ set(have.items()))} rows differ"
        return got

    return await wait_for(check, timeout=240, interval=2, what="PostgreSQL rows to converge")


class Api:
    def __init__(self, http: aiohttp.ClientSession, port: int) -> None:
        self.http = http
        self.base = f"http://127.0.0.1:{port}"

    async def get(self, path: str, status: int = 200, method: str = "GET"):
        async with self.http.request(method, self.base + path) as response:
            body = await response.read()
            assert response.status == status, (path, response.status, body[:500])
            return response.headers, body

    async def json(self, path: str, status: int = 200):
        headers, body = await self.get(path, status)
        assert headers["Content-Type"].startswith("application/json"), headers
        return orjson.loads(body)


async def started_api(http: aiohttp.ClientSession, worker) -> Api:
    api = Api(http, int(worker.env["WEB_PORT"]))

    async def up():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        try:
            async with http.get(api.base + "/api/health") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    await wait_for(up, timeout=90, interval=0.5, what="the worker's web server")
    return api


def parse_metrics(text: str) -> dict[str, list[tuple[dict, float]]]:
    types: dict[str, str] = {}
    samples: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            match = METRIC_LINE.match(line)
            assert match, f"not Prometheus text: {line!r}"
            labels = dict(LABEL.findall(match["labels"] or ""))
            samples.setdefault(match["name"], []).append((labels, float(match["value"])))
    for name in samples:
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        typed = name in types or types.get(family) == "histogram"
        assert typed, f"{name} has no # TYPE line"
    for counter in (
        "pipeline_events_processed_total",
        "pipeline_late_events_total",
        "pipeline_dead_letters_total",
    ):
        assert types.get(counter) == "counter", counter
    return samples


def total(samples, name: str) -> float:
    return sum(value for _, value in samples.get(name, []))


def open_at(sessions: dict, t: int) -> int:
    return sum(
        1 for (_, start), (end, _) in sessions.items() if start <= t and (end is None or end > t)
    )


async def api(worker, path: str) -> tuple[int, dict | str | None]:
    """(status, JSON or text) of a worker endpoint; (0, error) when it does not answer."""
    url = f"http://127.0.0.1:{worker.env['WEB_PORT']}{path}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(url) as response,
        ):
            body = await response.read()
            if response.content_type == "application/json":
                return response.status, orjson.loads(body)
            return response.status, body.decode()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
