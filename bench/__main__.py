"""python -m bench: throughput, latency, CPU, memory, recovery, the lake's costs and the
cost of each mechanism, on the local stack (started or reused by devstack).

`--soak-minutes N` adds a soak (RSS and consumer lag sampled every 10 s at a steady
rate); `--profile` samples the worker with py-spy during the catch-up.

Prints figures and writes them as JSON, a markdown table and a PNG chart. Not a test:
the numbers depend on the machine, and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg

from bench import changelog as changelog_bench
from bench import kafka, latency, mechanisms, report
from bench import lake as lake_bench
from bench import soak as soak_figures
from bench.profile import Profiler, top_functions
from bench.variant import VARIANTS
from bench.worker import Worker, WorkerGroup
from devstack import probes, stack
from devstack.s3 import VERSION as S3_VERSION

DEFAULT_SECTIONS = (
    "ceiling",
    "pipeline",
    "recovery",
    "scaleout",
    "memory",
    "latency",
    "latency10k",
    "lake",
    "changelog",
    "mechanisms",
)
STALL_S = 120.0  # catch-up: PostgreSQL not moving this long fails the run
# run only when asked for (--soak-minutes N)
SECTIONS = (*DEFAULT_SECTIONS, "soak")
SOAK_SAMPLE_S = 10


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, bootstrap: str, database_url: str) -> None:
        self.args = args
        self.bootstrap = bootstrap
        self.database_url = database_url
        self.work = Path(tempfile.mkdtemp(prefix="bench-"))
        self.run_id = uuid.uuid4().hex[:8]

    def topic(self, name: str) -> str:
        return f"bench-{self.run_id}-{name}"

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
        url = f"http://127.0.0.1:{worker.env['WEB_PORT']}/api/stats"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            return await response.json()

    async def catch_up(
        self,
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
        ends = await kafka.end_offsets(self.bootstrap, topic)
        began = worker.started
        source = await worker.wait_committed(self.bootstrap, topic, ends, label, on_first=on_first)
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
                    break
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
                if now - began > 3600:
                    raise TimeoutError(f"{label}: {have}/{views} page views after an hour")
                await asyncio.sleep(0.2)
        finally:
            await conn.close()
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

    # -- sections --------------------------------------------------------------

    async def backlog(self, name: str, events: int, users: int) -> tuple[str, dict]:
        topic = self.topic(name)
        say(f"preloading {events:,} events ({users:,} users) into {topic}...")
        loaded = await kafka.preload(self.bootstrap, topic, events, self.args.partitions, users)
        return topic, loaded

    async def ceiling(self, topic: str, n: int) -> dict:
        say("raw aiokafka consume + orjson ceiling, 3 runs...")
        runs = [await kafka.ceiling(self.bootstrap, topic, n) for _ in range(3)]
        return {
            "events_per_s_median": round(statistics.median(runs)),
            "runs": [round(r) for r in runs],
        }

    async def pipeline_and_recovery(self, topic: str, loaded: dict, recover: bool) -> dict:
        n = loaded["events"]
        out: dict = {}
        async with self.database("pipeline") as db:
            worker = self.worker("pipeline", topic, db, LAKE_FLUSH="2s").start()
            profiler: list[Profiler] = []

            def profile() -> None:  # from the first input commit: start-up left out
                say(f"pipeline: py-spy recording the worker (pid {worker.pid})...")
                profiler.append(Profiler(worker.pid, self.out_path("-profile.txt")))

            try:
                say("pipeline: one worker, every sink on, catching up the backlog...")
                cpu_before, cpu_began = worker.cpu_seconds(), time.monotonic()
                out["pipeline"] = await self.catch_up(
                    worker,
                    topic,
                    loaded,
                    db,
                    "pipeline",
                    on_first=profile if self.args.profile else None,
                )
                cpu_after = worker.cpu_seconds()
                if cpu_before is not None and cpu_after is not None:
                    # start-up included: the catch-up's cores in use, for comparison
                    out["pipeline"]["worker_cpu_pct_of_core"] = round(
                        (cpu_after - cpu_before) / (time.monotonic() - cpu_began) * 100, 1
                    )
                if profiler:
                    out["pipeline"]["profiled"] = True
                    out["profile"] = self.profile_figures(profiler[0])
                stats = await self.stats(worker)
                out["pipeline"]["dead_letters"] = stats["totals"]["dead_letters"]
                out["pipeline"]["late"] = stats["totals"]["late"]
                if recover:
                    out["recovery"] = await self.recovery(worker, topic, n)
            finally:
                for p in profiler:
                    p.stop()
                worker.stop()
        return out

    async def scaleout(self, topic: str, loaded: dict, count: int) -> dict:
        """The backlog caught up by `count` workers of one app started together on this
        machine: what more processes add to the one-worker catch-up. With `--scaleout-s3`
        (the default), the same with the lake on devstack's S3 server, by one worker and
        by `count`, each worker with its own state folder, the lake shared only through
        the S3 server."""
        lake = {"LAKE_DIR": str(self.work / "scaleout-lake")}
        out = await self.group_catch_up(topic, loaded, count, "scaleout", lake)
        if self.args.scaleout_s3:
            s3 = stack.ensure_s3(buckets=("bench",))
            out["s3"] = {"server": f"versitygw {S3_VERSION} at {s3.endpoint}"}
            for n, key in ((1, "one_worker"), (count, "workers")):
                on_s3 = {
                    "LAKE_URI": f"s3://bench/{self.run_id}-{n}/lake",
                    "LAKE_DIR": "",
                    **s3.environment(),
                }
                name = f"scaleout-s3-{n}"
                out["s3"][key] = await self.group_catch_up(topic, loaded, n, name, on_s3)
        return out

    async def group_catch_up(
        self, topic: str, loaded: dict, count: int, name: str, lake: dict[str, str]
    ) -> dict:
        """`count` workers of one app (settings `lake` for the lake) catch up the backlog."""
        async with self.database(name) as db:
            app_id = f"bench-{self.run_id}-{name}"
            workers = WorkerGroup(
                [
                    self.worker(f"{name}-{i}", topic, db, APP_ID=app_id, LAKE_FLUSH="2s", **lake)
                    for i in range(count)
                ]
            )
            try:
                workers.start()
                say(f"{name}: {count} worker(s) of one app catching up the backlog...")
                cpu_before, cpu_began = workers.cpu_seconds(), time.monotonic()
                out = await self.catch_up(workers, topic, loaded, db, name)
                cpu_after = workers.cpu_seconds()
                if cpu_before is not None and cpu_after is not None:
                    out["workers_cpu_pct_of_core"] = round(
                        (cpu_after - cpu_before) / (time.monotonic() - cpu_began) * 100, 1
                    )
                out["workers"] = count
            finally:
                workers.stop()
        return out

    def out_path(self, suffix: str) -> Path:
        """`--out` with `suffix` (`-profile.txt`), its folder made."""
        out = Path(self.args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out.with_name(f"{out.name}{suffix}")

    def profile_figures(self, profiler: Profiler) -> dict:
        stacks = profiler.stop()
        if stacks is None:
            say(f"profile: py-spy wrote nothing; see {profiler.log}")
            return {"error": f"py-spy wrote no samples; see {profiler.log}"}
        top = top_functions(stacks.read_text(), self.args.profile_top)
        return {"stacks": str(stacks), "format": "collapsed stacks (py-spy raw)", **top}

    async def recovery(self, worker: Worker, topic: str, state_events: int) -> dict:
        """SIGKILL the caught-up worker, add fresh events, restart it on the same state."""
        say("recovery: SIGKILL, then restart on the same state directory...")
        before = await kafka.committed(self.bootstrap, worker.source_group, topic)
        worker.kill()
        fresh = self.args.recovery_events
        await kafka.append(self.bootstrap, topic, fresh, self.args.users)
        worker.start()
        ends = await kafka.end_offsets(self.bootstrap, topic)
        resumed_at = None
        while resumed_at is None:
            await asyncio.sleep(0.2)
            worker.check_alive()
            now = await kafka.committed(self.bootstrap, worker.source_group, topic)
            if any(now.get(tp, 0) > before.get(tp, 0) for tp in ends):
                resumed_at = time.monotonic()
        await worker.wait_committed(self.bootstrap, topic, ends, "recovery")
        caught_up = time.monotonic()
        return {
            "state_of_events": state_events,
            "fresh_events_after_kill": fresh,
            "first_commit_after_restart_s": round(resumed_at - worker.started, 1),
            "fresh_events_committed_after_s": round(caught_up - worker.started, 1),
        }

    async def memory(self, users: int, events: int) -> dict:
        topic, loaded = await self.backlog("memory", events, users)
        async with self.database("memory") as db:
            worker = self.worker("memory", topic, db, LAKE_FLUSH="2s")
            if self.args.memray:
                capture = self.out_path("-memray.bin")
                capture.unlink(missing_ok=True)
                worker.wrap = [
                    "-m",
                    "memray",
                    "run",
                    "--native",
                    "--trace-python-allocators",
                    "--aggregate",
                    "-o",
                    str(capture),
                ]
                say(f"memory: under memray; then `python -m bench.memray_top {capture}`")
            worker.start()
            try:
                say(f"memory: one worker over {loaded['distinct_users']:,} distinct users...")
                run = await self.catch_up(worker, topic, loaded, db, "memory")
            finally:
                worker.stop()
        return {"distinct_users": loaded["distinct_users"], **run}

    async def latency(self, name: str, rate: float, seconds: float) -> dict:
        topic = self.topic(name)
        await kafka.create_topic(self.bootstrap, topic, self.args.partitions)
        async with self.database(name) as db:
            worker = self.worker(name, topic, db, IDLE_ADVANCE="2s").start()
            try:
                result = await latency.measure(
                    self.bootstrap,
                    db,
                    topic,
                    f"{topic}-enriched",
                    self.args.partitions,
                    worker,
                    rate=rate,
                    seconds=seconds,
                    users=self.args.users,
                    worker_stats=lambda: self.stats(worker),
                )
                result["rss_peak_mb"] = round(worker.rss_peak_mb() or 0, 1)
                return result
            finally:
                worker.stop()

    async def lake(self) -> dict:
        events = self.args.lake_events
        say(f"lake: write cost, files per day and DuckDB reads over {events:,} events...")
        return await asyncio.to_thread(lake_bench.figures, self.work / "lake", events=events)

    async def soak(self) -> dict:
        """Steady load for --soak-minutes; RSS and consumer lag every 10 s should be flat."""
        args = self.args
        rate, seconds = args.soak_rate, args.soak_minutes * 60
        topic = self.topic("soak")
        await kafka.create_topic(self.bootstrap, topic, args.partitions)
        async with self.database("soak") as db:
            worker = self.worker("soak", topic, db, IDLE_ADVANCE="2s")
            if args.soak_variant != "as-shipped":
                worker.variant = args.soak_variant
            worker.start()
            try:
                probe = latency.Probe(args.users, record=False)
                began = time.monotonic()
                while True:  # warm: the worker has its partitions and commits what it reads
                    worker.check_alive()
                    await latency.produce(self.bootstrap, topic, probe, 50, 1.0)
                    await asyncio.sleep(1.0)  # a commit interval or more
                    lags = await self.lags(worker, topic)
                    if not lags["source_lag"]:
                        break
                    if time.monotonic() - began > 120:
                        raise TimeoutError(f"soak: the worker did not catch up in 120 s: {lags}")
                say(f"soak: {rate:,.0f} events/s for {args.soak_minutes:g} min...")
                cpu_before, cpu_began = worker.cpu_seconds(), time.monotonic()
                sending = asyncio.create_task(
                    latency.produce(self.bootstrap, topic, probe, rate, seconds)
                )
                samples = []
                while not sending.done():
                    await asyncio.wait({sending}, timeout=SOAK_SAMPLE_S)
                    worker.check_alive()
                    stats = await self.stats(worker)
                    committed = await self.lags(worker, topic)
                    sample = {
                        "t_s": round(time.monotonic() - cpu_began),
                        "rss_mb": round(worker.rss_mb() or 0, 1),
                        # highwater - position of the worker's consumers (/api/stats)
                        "source_lag": sum(p["consumer_lag"] or 0 for p in stats["sources"]),
                        "merge_lag": sum(p["consumer_lag"] or 0 for p in stats["user_partitions"]),
                        # end offset - the group's committed offset
                        "source_commit_lag": committed["source_lag"],
                        "merge_commit_lag": committed["merge_lag"],
                    }
                    samples.append(sample)
                    say(
                        f"  soak {sample['t_s']:>5} s: RSS {sample['rss_mb']:,.0f} MB, lag "
                        f"{sample['source_lag']:,} (source) {sample['merge_lag']:,} (stateful), "
                        f"uncommitted {committed['source_lag']:,} / {committed['merge_lag']:,}"
                    )
                sent = await sending
                cpu = worker.cpu_seconds()
                took = time.monotonic() - cpu_began
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
            "worker_cpu_pct_of_core": (
                None
                if cpu is None or cpu_before is None
                else round((cpu - cpu_before) / took * 100, 1)
            ),
            "samples": samples,
        }

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

    async def mechanisms(self) -> dict:
        n = self.args.mechanism_events
        topic, loaded = await self.backlog("mechanisms", n, self.args.users)
        runs: dict[str, dict] = {}
        # Round-robin, as-shipped first and last: drift on a shared machine hits every
        # variant alike, and the spread of as-shipped's runs is the noise.
        others = [v for v in VARIANTS if v != "as-shipped"]
        order = ["as-shipped", *others] * self.args.repeat + ["as-shipped"]
        for i, variant in enumerate(order):
            async with self.database(f"v{i}") as db:
                worker = self.worker(f"variant-{i}", topic, db, LAKE_FLUSH="2s")
                worker.variant = variant
                worker.start()
                try:
                    say(f"mechanisms: {variant}...")
                    run = await self.catch_up(worker, topic, loaded, db, variant)
                finally:
                    worker.stop()
            runs.setdefault(variant, []).append(run["events_per_s"])
        base = statistics.median(runs["as-shipped"])
        variants = {
            name: {
                "events_per_s": statistics.median(rates),
                "runs": rates,
                "vs_as_shipped": round(statistics.median(rates) / base, 3),
            }
            for name, rates in runs.items()
        }
        say("mechanisms: producer modes (Kafka transactions)...")
        producer = await mechanisms.producer_modes(self.bootstrap, n, batch=min(5_000, n))
        return {"events": n, "variants": variants, "producer": producer}

    async def run(self) -> dict:
        args = self.args
        sections = set(args.only.split(",")) if args.only else set(DEFAULT_SECTIONS)
        unknown = sections - set(SECTIONS)
        if unknown:
            raise SystemExit(f"unknown section(s): {', '.join(sorted(unknown))}")
        if args.soak_minutes > 0:
            sections.add("soak")
        elif "soak" in sections:
            raise SystemExit("the soak section needs --soak-minutes N")
        if args.profile and "pipeline" not in sections:
            raise SystemExit("--profile records the pipeline section's catch-up")
        result: dict = {
            "machine": report.machine(),
            "settings": {k: v for k, v in vars(args).items() if k != "out"},
        }
        if True:
            if sections & {"ceiling", "pipeline", "recovery", "scaleout"}:
                topic, result["backlog"] = await self.backlog("backlog", args.events, args.users)
                if "ceiling" in sections:
                    result["ceiling"] = await self.ceiling(topic, args.events)
                if "scaleout" in sections:  # before recovery adds events to the backlog
                    result["scaleout"] = await self.scaleout(
                        topic, result["backlog"], args.scaleout_workers
                    )
                if sections & {"pipeline", "recovery"}:
                    result.update(
                        await self.pipeline_and_recovery(
                            topic, result["backlog"], recover="recovery" in sections
                        )
                    )
                if "ceiling" in result and "pipeline" in result:
                    result["ratio_pipeline_to_ceiling"] = round(
                        result["pipeline"]["events_per_s"]
                        / result["ceiling"]["events_per_s_median"],
                        4,
                    )
            if "memory" in sections:
                result["memory"] = await self.memory(args.memory_users, args.memory_events)
            if "latency" in sections:
                result["latency"] = await self.latency(
                    "latency", args.latency_rate, args.latency_seconds
                )
            if "latency10k" in sections:
                result["latency10k"] = await self.latency(
                    "latency10k", args.latency10k_rate, args.latency10k_seconds
                )
            if "lake" in sections:
                result["lake"] = await self.lake()
            if "changelog" in sections:
                say("changelog: one record per changed key vs one per commit + snapshots...")
                result["changelog"] = await asyncio.to_thread(changelog_bench.figures)
            if "mechanisms" in sections:
                result["mechanisms"] = await self.mechanisms()
            if "soak" in sections:
                result["soak"] = await self.soak()
        # kept when a section fails or with --keep: the workers' logs are there
        if self.args.keep:
            say(f"workers' logs and state kept in {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)
        return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--events", type=int, default=500_000, help="backlog size (default 500k)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--users", type=int, default=10_000, help="distinct users in the backlog")
    p.add_argument("--recovery-events", type=int, default=20_000, help="added after SIGKILL")
    p.add_argument(
        "--scaleout-workers", type=int, default=2, help="workers of the scaleout section"
    )
    p.add_argument(
        "--scaleout-s3",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the scaleout section also catches up with the lake on devstack's S3 server "
        "(one worker, then --scaleout-workers); needs Go to build the server once",
    )
    p.add_argument("--memory-users", type=int, default=100_000)
    p.add_argument("--memory-events", type=int, default=300_000)
    p.add_argument("--latency-rate", type=float, default=2_000, help="events/s")
    p.add_argument("--latency-seconds", type=float, default=60)
    p.add_argument("--latency10k-rate", type=float, default=10_000, help="events/s")
    p.add_argument("--latency10k-seconds", type=float, default=60)
    p.add_argument("--lake-events", type=int, default=200_000, help="bench.lake's backlog")
    p.add_argument("--mechanism-events", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=1, help="runs of each mechanism variant")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but soak)",
    )
    p.add_argument(
        "--soak-minutes",
        type=float,
        default=0,
        help="add a soak of N minutes (RSS and lag every 10 s); not a default section",
    )
    p.add_argument("--soak-rate", type=float, default=5_000, help="the soak's events/s")
    p.add_argument(
        "--soak-variant",
        choices=sorted(VARIANTS),
        default="as-shipped",
        help="the soak's worker with one part swapped (bench/variant.py), e.g. no-lake",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy records the worker during the pipeline catch-up (<out>-profile.txt)",
    )
    p.add_argument("--profile-top", type=int, default=15, help="functions listed")
    p.add_argument(
        "--memray",
        action="store_true",
        help="the memory section's worker runs under memray (<out>-memray.bin); its peak "
        "RSS then includes memray's own",
    )
    p.add_argument("--keep", action="store_true", help="keep the workers' logs and state")
    p.add_argument("--out", default="bench-results/latest", help="path prefix of .json/.md/.png")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = stack.up()
    result = asyncio.run(Bench(args, info.bootstrap, info.database_url).run())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = report.markdown(result)
    out.with_suffix(".md").write_text(table)
    chart = report.chart(result, out.with_suffix(".png"))
    print(table)
    say(
        f"written: {out.with_suffix('.json')}, {out.with_suffix('.md')}"
        + (f", {chart}" if chart else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
