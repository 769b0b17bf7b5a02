"""Real Kafka, PostgreSQL and (for the lake on object storage) an S3 server for
integration tests, started through devstack (or reused)."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devstack import stack
from devstack.probes import port_free
from devstack.s3 import S3Server

ROOT = Path(__file__).resolve().parents[2]

INTEGRATION_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def quiet_test_clients():
    """The tests' own aiokafka clients (producers feeding a worker, readers checking its
    outputs) log every failed connection while a test keeps Kafka away on purpose: in
    CI that was 213,000 lines for one outage test. What the worker logs is its own and
    checked by the tests; here the test process keeps aiokafka's CRITICAL only (the
    unit tests, which check how the worker governs aiokafka's lines, are untouched)."""
    library = logging.getLogger("aiokafka")
    level = library.level
    library.setLevel(logging.CRITICAL)
    yield
    library.setLevel(level)


def pytest_collection_modifyitems(config, items):
    """Every test under tests/integration is `integration` (a `pytestmark` here would
    mark only this module's own tests: it does not reach the other modules)."""
    for item in items:
        if INTEGRATION_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def infra():
    return stack.up()


@pytest.fixture(scope="session")
def bootstrap(infra) -> str:
    return infra.bootstrap


@pytest.fixture(scope="session")
def database_url(infra) -> str:
    return infra.database_url


TEST_BUCKET = "lake-tests"


@pytest.fixture(scope="session")
def s3(infra) -> S3Server:
    """devstack's S3 server (versitygw), started or reused, with the tests' bucket."""
    return stack.ensure_s3(buckets=(TEST_BUCKET,))


@pytest.fixture
def s3_lake(s3, unique) -> dict[str, str]:
    """The settings of a lake of its own on the S3 server: LAKE_URI and the AWS_* options.
    Its objects are deleted afterwards (from the server's folder)."""
    yield {"LAKE_URI": f"s3://{TEST_BUCKET}/{unique}/lake", **s3.environment()}
    shutil.rmtree(s3.root / TEST_BUCKET / unique, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
async def fresh_db(database_url, unique):
    """A database of its own for one test; dropped afterwards."""
    name = f"test_{unique}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    yield url
    if os.environ.get("KEEP_TEST_DB"):  # for a look afterwards
        print(f"\nkept database {name}")
        return
    await drop_database(database_url, name)


async def drop_database(database_url: str, name: str) -> None:
    """DROP ... WITH (FORCE), retried: it cannot end an autovacuum worker (a superuser's
    backend) that happens to be in the database, and those finish within seconds."""
    conn = await asyncpg.connect(database_url)
    try:
        for attempt in range(20):
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except asyncpg.InsufficientPrivilegeError:
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def create_topic(
    bootstrap: str, name: str, partitions: int, configs: dict[str, str] | None = None
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=configs or {})])
    finally:
        await admin.close()


class Worker:
    """`faust -A app worker` as a subprocess with its own state folder."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path = ROOT) -> None:
        self.log = log
        self.env = env
        self.cwd = cwd  # another folder: a host with nothing local in common
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if not self.alive():
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def pipeline_env(bootstrap, fresh_db, unique, tmp_path) -> dict[str, str]:
    """Settings for one isolated pipeline: its own topics, database, lake and app id."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": fresh_db,
        "APP_ID": f"pipeline-{unique}",
        "INPUT_TOPIC": f"user_activity-{unique}",
        "ENRICHED_TOPIC": f"enriched_activity-{unique}",
        "DLQ_TOPIC": f"user_activity_dlq-{unique}",
        "LAKE_DIR": str(tmp_path / "lake"),
        "PARTITIONS": "4",
        "LAKE_FLUSH": "2s",
        "PYTHONUNBUFFERED": "1",
    }


_handed_out: set[int] = set()


def random_free_port(low: int = 20000, high: int = 32000, tries: int = 200) -> int:
    """A free port picked at random, so concurrent test sessions rarely collide.

    A fixed base plus a scan (16066 + 10*n) made every session try the same ports
    first; two sessions starting workers together would both find one free and race.
    Ports handed out earlier in this process are skipped as well.
    """
    rng = random.SystemRandom()
    for _ in range(tries):
        port = rng.randint(low, high)
        if port not in _handed_out and port_free("127.0.0.1", port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free port on 127.0.0.1 in {low}..{high} after {tries} tries")


@pytest.fixture
def start_worker(pipeline_env, tmp_path):
    workers: list[Worker] = []

    def start(state: str | None = None, cwd: Path | None = None, **overrides: str) -> Worker:
        """A new worker; `state` names its state folder (reuse one to restart a worker),
        `cwd` the folder it runs in (its log goes there too).

        Its web server gets a random free port in 20000-32000 unless `WEB_PORT` is
        passed as an override.
        """
        n = len(workers)
        env = {
            **pipeline_env,
            "STATE_DIR": str(tmp_path / (state or f"state-{n}")),
            **overrides,
        }
        if "WEB_PORT" not in overrides:
            env["WEB_PORT"] = str(random_free_port())
        if cwd is not None:  # the code of this checkout, from any folder
            cwd.mkdir(parents=True, exist_ok=True)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        log = (cwd or tmp_path) / f"worker-{n}.log"
        worker = Worker(env, log, cwd=cwd or ROOT).start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


async def wait_for(check, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll an async check until it returns a truthy value; fail with its last value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last is True or (last and last is not None and not isinstance(last, str)):
            return last
        await asyncio.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}"[:4000])


@pytest.fixture
async def background():
    """Start a coroutine as a task; a test that fails midway leaves none running."""
    tasks: list[asyncio.Task] = []

    def start(coro) -> asyncio.Task:
        tasks.append(asyncio.create_task(coro))
        return tasks[-1]

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
