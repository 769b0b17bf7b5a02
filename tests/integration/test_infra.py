"""The real services the launcher (devstack) provides, and how it refuses bad situations."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devstack import stack
from devstack.probes import is_kafka, is_postgres, next_free_port, split_bootstrap
from devstack.s3 import binary, is_s3
from tests.integration.conftest import ROOT, create_topic


async def test_kafka_round_trip_over_partitions(bootstrap, unique):
    topic = f"roundtrip-{unique}"
    await create_topic(bootstrap, topic, 3)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(30):
            await producer.send_and_wait(
                topic, f"v{i}".encode(), key=f"k{i}".encode(), partition=i % 3
            )
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        assert partitions == {0, 1, 2}
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        got = {}
        while len(got) < 30:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, f"no records after {len(got)} of 30"
            for tp, records in batch.items():
                for record in records:
                    got[record.key.decode()] = (tp.partition, record.value.decode())
    finally:
        await consumer.stop()
    assert got == {f"k{i}": (i % 3, f"v{i}") for i in range(30)}


async def test_postgres_answers_queries(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT 40 + $1::int", 2) == 42
        assert await conn.fetchval("SELECT current_database()") == "stream_data"
    finally:
        await conn.close()


def test_probes_tell_services_apart(bootstrap, database_url):
    host, port = split_bootstrap(bootstrap)
    assert is_kafka(host, port)
    assert not is_postgres(host, port)
    pg_port = int(database_url.rsplit(":", 1)[1].split("/")[0])
    assert is_postgres("127.0.0.1", pg_port)
    assert not is_kafka("127.0.0.1", pg_port)


def _run_devstack(env_overrides: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "STATE_DIR": str(tmp_path / "state"), **env_overrides}
    return subprocess.run(
        [sys.executable, "-m", "devstack", "infra"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_launcher_refuses_a_port_held_by_something_else(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", next_free_port("127.0.0.1", 19092)))
    server.listen()
    port = server.getsockname()[1]

    def answer_nonsense():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
            conn.close()

    threading.Thread(target=answer_nonsense, daemon=True).start()
    try:
        result = _run_devstack({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}"}, tmp_path)
    finally:
        server.close()
    assert result.returncode == 2, result.stdout + result.stderr
    assert (
        f"port {port} (KAFKA_BOOTSTRAP_SERVERS) is held by a program that is not Kafka"
        in result.stderr
    )
    assert not (tmp_path / "state" / "kafka" / "kafka.pid").exists()


def test_launcher_names_what_to_install_when_java_is_missing(tmp_path):
    port = next_free_port("127.0.0.1", 29092)
    result = _run_devstack(
        {"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "PATH": str(tmp_path)}, tmp_path
    )
    assert result.returncode == 2
    assert "`java` is not installed" in result.stderr
    assert "openjdk" in result.stderr


def test_probes_tell_the_s3_server_apart(s3, bootstrap, database_url):
    assert is_s3(s3.host, s3.port)
    host, port = split_bootstrap(bootstrap)
    assert not is_s3(host, port)
    assert not is_s3("127.0.0.1", int(database_url.rsplit(":", 1)[1].split("/")[0]))


def _stack_env(bootstrap, database_url, s3_port: int) -> dict[str, str]:
    """Kafka and PostgreSQL reused; the lake on an S3 endpoint on this machine."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "DATABASE_URL": database_url,
        "LAKE_URI": "s3://lake/events",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
    }


def test_launcher_names_go_when_it_is_missing_for_a_lake_on_s3(bootstrap, database_url, tmp_path):
    port = next_free_port("127.0.0.1", 29000)
    env = {**_stack_env(bootstrap, database_url, port), "PATH": str(tmp_path)}
    result = _run_devstack(env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "`go` is not installed" in result.stderr
    assert "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0" in result.stderr


def test_launcher_starts_the_s3_server_for_a_lake_on_s3_and_down_stops_it(
    s3, bootstrap, database_url, tmp_path
):
    """`make infra`/`make up` with LAKE_URI=s3://... on a local endpoint start the S3
    server (the binary built once is copied in: building is not what is tested here),
    print its exports and make the lake's bucket; `make down` stops it and leaves the
    reused Kafka and PostgreSQL alone."""
    built = binary(stack.state_dir())
    own = tmp_path / "state" / "s3" / built.parent.name
    own.mkdir(parents=True)
    shutil.copy2(built, own / built.name)
    port = next_free_port("127.0.0.1", 29100)
    env = _stack_env(bootstrap, database_url, port)
    result = _run_devstack(env, tmp_path)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"export AWS_ENDPOINT_URL=http://127.0.0.1:{port}" in result.stdout
        assert "export AWS_ALLOW_HTTP=true" in result.stdout
        assert is_s3("127.0.0.1", port)
        assert (tmp_path / "state" / "s3" / "data" / "lake").is_dir()
        again = _run_devstack(env, tmp_path)  # reused, not started twice
        assert again.returncode == 0 and "ready on" not in again.stderr, again.stderr
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "devstack", "down"],
            cwd=ROOT,
            env={**os.environ, "STATE_DIR": str(tmp_path / "state"), **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.stdout.strip() == "stopped: s3", down.stdout + down.stderr
    assert not is_s3("127.0.0.1", port)
    assert is_kafka(*split_bootstrap(bootstrap))
