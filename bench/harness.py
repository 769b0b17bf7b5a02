"""What every section of the benchmark works with: the run's topics, scratch databases
and workers, each named after the run so that runs never share anything."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg

from bench import kafka
from bench.worker import Worker
from devstack import probes
from devstack.process import say


class Harness:
    def __init__(self, args: argparse.Namespace, bootstrap: str, database_url: str) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.work = Path(tempfile.mkdtemp(prefix="bench-"))
        self.run_id = uuid.uuid4().hex[:8]

    def topic(self, name: str) -> str:
        return f"bench-{self.run_id}-{name}"

    async def backlog(self, name: str, events: int, users: int) -> tuple[str, dict]:
        """A topic preloaded with `events` events of `users` users: (its name, counts)."""
        topic = self.topic(name)
        say(f"preloading {events:,} events ({users:,} users) into {topic}...")
        loaded = await kafka.preload(self.bootstrap, topic, events, self.args.partitions, users)
        return topic, loaded

    @contextlib.asynccontextmanager
    async def database(self, name: str) -> AsyncIterator[str]:
        """A scratch database, so the benchmark never touches stream_data's rows."""
        db = f"bench_{self.run_id}_{name.replace('-', '_')}"
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(f'CREATE DATABASE "{db}"')
        finally:
            await conn.close()
        try:
            yield self.database_url.rsplit("/", 1)[0] + f"/{db}"
        finally:
            conn = await asyncpg.connect(self.database_url)
            try:
                for attempt in range(20):
                    try:
                        await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                        break
                    except asyncpg.InsufficientPrivilegeError:  # an autovacuum worker
                        if attempt == 19:
                            raise
                        await asyncio.sleep(0.5)
            finally:
                await conn.close()

    def worker(self, name: str, topic: str, database_url: str, **extra) -> Worker:
        work = self.work / name
        work.mkdir(parents=True, exist_ok=True)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "DATABASE_URL": database_url,
            "APP_ID": f"bench-{self.run_id}-{name}",
            "INPUT_TOPIC": topic,
            "ENRICHED_TOPIC": f"{topic}-enriched",
            "DLQ_TOPIC": f"{topic}-dlq",
            "PARTITIONS": str(self.args.partitions),
            "LAKE_DIR": str(work / "lake"),
            "STATE_DIR": str(work / "state"),
            "WEB_PORT": str(probes.ephemeral_port()),
            "IDLE_ADVANCE": "1h",
            **extra,
        }
        return Worker(work, env)

    async def stats(self, worker: Worker) -> dict:
        """The worker's /api/stats."""
        url = f"http://127.0.0.1:{worker.env['WEB_PORT']}/api/stats"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return await response.json()

    async def lags(self, worker: Worker, topic: str) -> dict[str, int]:
        """Records not yet committed by the source stage (input topic) and by the
        stateful stage (the user-keyed topic)."""
        out = {}
        for key, name, group in (
            ("source_lag", topic, worker.source_group),
            ("merge_lag", f"{worker.env['APP_ID']}-by-user", worker.stateful_group),
        ):
            try:
                ends = await kafka.end_offsets(self.bootstrap, name)
            except Exception:  # the user-keyed topic before the worker made it
                ends = {}
            done = await kafka.committed(self.bootstrap, group, name) if ends else {}
            out[key] = sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())
        return out

    def out_path(self, suffix: str) -> Path:
        """`--out` with `suffix` (`-profile.txt`), its folder made."""
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out.with_name(f"{out.name}{suffix}")

    def finish(self) -> None:
        """The workers' logs and state: kept with --keep, else removed."""
        if self.args.keep:
            say(f"workers' logs and state kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


class CpuShare:
    """The share of one core a worker (or group) uses from now until `pct()`."""

    def __init__(self, worker) -> None:
        self.worker = worker
        self.before, self.began = worker.cpu_seconds(), time.monotonic()

    def pct(self) -> float | None:
        after = self.worker.cpu_seconds()
        if self.before is None or after is None:
            return None
        return round((after - self.before) / (time.monotonic() - self.began) * 100, 1)
