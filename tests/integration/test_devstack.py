"""`python -m devstack` as a newcomer runs it, on a stack of its own: a state folder
and free ports of its own, so the shared stack the other tests use is never touched
(and the last test checks that it still answers).

- infra starts Kafka and PostgreSQL and prints where they are;
- infra again reuses them (the same processes), and so does a state folder pointed at
  servers that are already running, without claiming them;
- down stops what it started and leaves nothing: no process, no port, no stack.env.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from devstack import probes
from devstack.process import pid_alive, read_pid
from tests.integration.conftest import ROOT, random_free_port, wait_for


def devstack(
    command: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devstack", command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.fixture
def own_stack_env():
    """A state folder the postgres user can reach (not pytest's root-only tmp) and two
    free ports; whatever the test leaves running is stopped through `down`."""
    state = Path(tempfile.mkdtemp(prefix="devstack-test-", dir="/tmp"))
    state.chmod(0o755)
    kafka_port, pg_port = random_free_port(), random_free_port()
    env = {
        **os.environ,
        "STATE_DIR": str(state),
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "DATABASE_URL": f"postgresql://user:password@127.0.0.1:{pg_port}/stream_data",
    }
    yield env
    devstack("down", env)
    shutil.rmtree(state, ignore_errors=True)


async def shared_stack_answers(infra) -> None:
    """The shared stack still answers (waiting out another session's outage test, which
    stops and restarts its PostgreSQL or Kafka for a minute or so)."""

    async def check():
        try:
            await answers(infra.bootstrap, infra.database_url)
        except (OSError, asyncpg.PostgresError, KafkaError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return True

    await wait_for(check, timeout=180, interval=2, what="the shared stack")


async def answers(bootstrap: str, database_url: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.list_topics()
    finally:
        await admin.close()
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


def exports(stdout: str) -> dict[str, str]:
    lines = [line.removeprefix("export ") for line in stdout.splitlines() if line.strip()]
    return dict(line.split("=", 1) for line in lines)


async def test_infra_starts_a_stack_reuses_it_and_down_leaves_nothing(own_stack_env, infra):
    env, state = own_stack_env, Path(own_stack_env["STATE_DIR"])
    up = devstack("infra", env)
    assert up.returncode == 0, up.stderr
    where = exports(up.stdout)
    assert where == {
        "KAFKA_BOOTSTRAP_SERVERS": env["KAFKA_BOOTSTRAP_SERVERS"],
        "DATABASE_URL": env["DATABASE_URL"],
    }
    assert "kafka: ready on" in up.stderr and "postgres: ready on" in up.stderr
    await answers(where["KAFKA_BOOTSTRAP_SERVERS"], where["DATABASE_URL"])
    kafka_pid = read_pid(state / "kafka" / "kafka.pid")
    pg_pid = read_pid(state / "postgres" / "data" / "postmaster.pid")
    assert kafka_pid and pg_pid

    again = devstack("infra", env)  # reuse: the same processes, nothing started
    assert again.returncode == 0, again.stderr
    assert exports(again.stdout) == where
    assert "ready on" not in again.stderr
    assert read_pid(state / "kafka" / "kafka.pid") == kafka_pid
    assert read_pid(state / "postgres" / "data" / "postmaster.pid") == pg_pid
    status = devstack("status", env)
    assert "Kafka at" in status.stdout and "PostgreSQL at" in status.stdout

    down = devstack("down", env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "stopped: kafka, postgres"
    assert not pid_alive(kafka_pid) and not pid_alive(pg_pid)
    for address in where.values():
        port = address.rsplit("@", 1)[-1].split("/")[0].rsplit(":", 1)[1]
        assert probes.port_free("127.0.0.1", int(port)), f"{address} still held"
    assert not (state / "stack.env").exists()
    assert "started no Kafka, PostgreSQL or S3 server" in devstack("status", env).stdout
    # the shared stack, which this launcher did not start, still answers
    await shared_stack_answers(infra)


async def test_servers_already_running_are_reused_and_not_claimed(own_stack_env, infra):
    env = {
        **own_stack_env,
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "DATABASE_URL": infra.database_url,
    }
    up = devstack("infra", env, timeout=60)
    assert up.returncode == 0, up.stderr
    assert exports(up.stdout) == {
        "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "DATABASE_URL": infra.database_url,
    }
    assert "kafka: using the broker already running" in up.stderr
    assert "postgres: using the server already running" in up.stderr
    down = devstack("down", env, timeout=60)
    assert down.stdout.strip() == "stopped: nothing was running"
    await shared_stack_answers(infra)  # left alone
