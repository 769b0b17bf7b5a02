"""Faults against the real stack, with a worker running and events flowing.

- PostgreSQL stopped for 30 s mid-run (devstack's own server, started again after);
- the Kafka broker stopped and started again on the same port and data dir (and, marked
  slow, kept down for 60 s: longer than aiokafka's default 40 s delivery timeout);
- the lake folder replaced by a regular file (writes fail) and repaired;
- security basics: no password in logs, the web server on loopback only, the
  DATABASE_URL's sslmode reaching asyncpg;
- SIGTERM while records wait for the next lake flush: the worker flushes and stops.

Every test restores what it broke in a `finally`, so a failing assertion never leaves
the shared stack down. They stop the stack's broker and database: run them serially and
not while something else uses the same stack (`STATE_DIR` selects another stack).
Durations and counts are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.sinks.postgres import PostgresSink
from devstack import probes, stack
from devstack.kafka import KafkaBroker
from devstack.postgres import PostgresServer
from tests.integration import scenario
from tests.integration.checks import diff, lake_offsets, read_rows, read_topic
from tests.integration.conftest import create_topic, wait_for
from tests.integration.web_support import api

pytestmark = pytest.mark.integration

PARTITIONS = 4
SECRET = "s3cr3t-XYZ"
OUTAGE_S = 30.0


# -- helpers ---------------------------------------------------------------------------


def build(seed: int, users: int, span_min: int = 40):
    start_ms = (int(time.time() * 1000) - 4 * 3_600_000) // 1000 * 1000 + 11
    per_partition = scenario.build(
        seed=seed,
        users=users,
        partitions=PARTITIONS,
        start_ms=start_ms,
        span_ms=span_min * scenario.MIN,
        keyed=True,
    )
    return per_partition, scenario.expect(per_partition), sum(len(s) for s in per_partition)


def interleave(per_partition) -> list[tuple[int, scenario.Sent]]:
    """One send order over all partitions, each partition's own order kept."""
    rng = random.Random(7)
    cursors = [0] * len(per_partition)
    order = []
    while True:
        left = [p for p, seq in enumerate(per_partition) if cursors[p] < len(seq)]
        if not left:
            return order
        p = rng.choice(left)
        order.append((p, per_partition[p][cursors[p]]))
        cursors[p] += 1


def split(per_partition, share: float):
    """The scenario in two parts by send order (`share` of it first), each per partition."""
    order = interleave(per_partition)
    cut = int(len(order) * share)
    parts = (order[:cut], order[cut:])
    return tuple([[e for p, e in part if p == q] for q in range(PARTITIONS)] for part in parts)


async def send_paced(
    bootstrap: str, topic: str, per_partition, seconds: float, request_timeout_ms: int = 180_000
) -> int:
    """Send the scenario spread over `seconds`, keyed, surviving a broker restart.

    Idempotent with a long delivery timeout: a batch in flight when the broker stops is
    retried, not lost or doubled, so the input holds each scenario event exactly once.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        request_timeout_ms=request_timeout_ms,
        retry_backoff_ms=300,
    )
    await producer.start()
    try:
        order = interleave(per_partition)
        chunk = 50
        pause = seconds * chunk / len(order)
        delivered = []
        for i in range(0, len(order), chunk):
            for p, e in order[i : i + chunk]:
                value = orjson.dumps(e.value())
                delivered.append(
                    await producer.send(topic, value, key=e.user.encode(), partition=p)
                )
            await asyncio.sleep(pause)
        await producer.flush()
        for future in delivered:
            await future  # raises if a record was not delivered
        return len(delivered)
    finally:
        await producer.stop()


def web_port() -> str:
    """A free port away from conftest's 16066+ (other test runs on this machine use those)
    and below the ephemeral range (32768+), where a client's own outgoing connection can
    take a port that nothing listens on (TCP self-connect)."""
    return str(probes.next_free_port("127.0.0.1", random.randrange(20_000, 30_000)))


async def web_up(worker) -> dict:
    async def stats():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        status, body = await api(worker, "/api/stats")
        if status == 200:  # and it is this worker, not another one on a reused port
            assert body["worker"]["pid"] == worker.proc.pid, body["worker"]
            return body
        return None

    return await wait_for(stats, timeout=90, interval=0.5, what="the worker's /api/stats")


def metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


async def converge(worker, url: str, expected: scenario.Expected, timeout: float) -> None:
    async def rows_equal():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        return diff(expected, await read_rows(url)) or True

    await wait_for(rows_equal, timeout=timeout, interval=2, what="rows equal the expectation")


async def lake_exactly_once(
    worker, lake_dir, total: int, timeout: float = 120, storage_options=None
) -> Counter:
    """Wait for `total` offsets in the lake (a folder, or a URI with its options); none twice."""

    async def complete():
        assert worker.alive(), f"worker died:\n{worker.tail()}"
        got = set(lake_offsets(lake_dir, storage_options))
        return True if len(got) == total else f"{len(got)}/{total} offsets in the lake"

    await wait_for(complete, timeout=timeout, interval=2, what="every offset in the lake")
    in_lake = Counter(lake_offsets(lake_dir, storage_options))
    twice = [k for k, n in in_lake.items() if n > 1]
    assert not twice, f"{len(twice)} offsets are in the lake more than once, e.g. {twice[:5]}"
    return in_lake


async def lake_failing(worker) -> dict:
    """Wait for /api/health to say (503) that the lake cannot be written; its health."""

    async def failing():
        assert worker.alive(), worker.tail()
        status, health = await api(worker, "/api/health")
        return health if status == 503 and not health["checks"]["lake"]["ok"] else None

    health = await wait_for(failing, timeout=30, interval=0.5, what="/api/health lake error")
    assert "Error" in health["checks"]["lake"]["error"], health
    return health


async def enriched_exactly_once(bootstrap: str, topic: str, in_lake: Counter) -> int:
    """The enriched topic (read_committed) holds each event of the lake once; how many."""
    copies = Counter()
    for record in await read_topic(bootstrap, topic):
        value = orjson.loads(record.value)
        copies[(value["kafka_partition"], value["kafka_offset"])] += 1
    assert set(copies) == set(in_lake), "the enriched topic misses or invents events"
    twice = [k for k, n in copies.items() if n > 1]
    assert not twice, f"{len(twice)} events in the enriched topic twice, e.g. {twice[:5]}"
    return sum(copies.values())


async def committed_offsets(bootstrap: str, app_id: str, topic: str) -> dict[int, int]:
    """Committed offsets of the input topic, by whichever group of the app consumes it
    (the Faust group `<app id>`, or a separate source group `<app id>-source`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found: dict[int, int] = {}
        for group in (app_id, f"{app_id}-source"):
            offsets = await admin.list_consumer_group_offsets(group)
            for tp, om in offsets.items():
                if tp.topic == topic and om.offset >= 0:
                    found[tp.partition] = max(om.offset, found.get(tp.partition, -1))
        return found
    finally:
        await admin.close()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


def assert_no_secret(log: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in log, f"the worker log contains a secret ({len(secret)} chars)"


def password_of(url: str) -> str:
    return urlsplit(url).password or ""


# -- the stack's own services --------------------------------------------------------------


def devstack_postgres(database_url: str) -> PostgresServer:
    """The PostgreSQL server devstack runs for this stack; skip when it is someone else's."""
    state = stack.state_dir()
    port_file = state / "postgres" / "port.txt"
    server = PostgresServer(state, database_url)
    if not port_file.exists():
        pytest.skip(f"PostgreSQL was not started by devstack in {state}: cannot stop it")
    server.port = int(port_file.read_text())
    if urlsplit(database_url).port != server.port or not server.running():
        pytest.skip("DATABASE_URL is not the devstack server of state_dir(): cannot stop it")
    return server


def devstack_kafka(bootstrap: str) -> KafkaBroker:
    """The broker devstack runs for this stack; skip when it is someone else's."""
    broker = KafkaBroker(stack.state_dir())
    layout = broker.home / "layout.txt"
    if broker.running_pid() is None or not layout.exists():
        pytest.skip(f"Kafka was not started by devstack in {broker.home}: cannot restart it")
    broker.port = int(layout.read_text().split()[0])
    if probes.split_bootstrap(bootstrap)[1] != broker.port:
        pytest.skip("KAFKA_BOOTSTRAP_SERVERS is not the devstack broker: cannot restart it")
    return broker


async def ensure_postgres_up(server: PostgresServer) -> None:
    if not server.running():
        await asyncio.to_thread(server.start)


async def ensure_kafka_up(broker: KafkaBroker) -> None:
    if broker.running_pid() is None or not probes.is_kafka(broker.host, broker.port):
        if broker.running_pid() is not None:
            await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)


@pytest.fixture
async def secret_db(database_url, unique):
    """A role with a distinctive password and a database it owns: grep-able in logs."""
    server = PostgresServer(stack.state_dir(), database_url)
    parts = urlsplit(database_url)
    name = f"faults_{unique}"

    async def superuser():
        # devstack's cluster trusts local socket connections for its `postgres` superuser.
        return await asyncpg.connect(
            host=str(server.socket_dir), port=parts.port, user="postgres", database="postgres"
        )

    try:
        conn = await superuser()
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"no superuser access to devstack's PostgreSQL ({exc})")
    try:
        # DDL takes no parameters; name and password are this file's constants.
        await conn.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{SECRET}'")
        await conn.execute(f'CREATE DATABASE "{name}" OWNER "{name}"')
    finally:
        await conn.close()
    yield f"postgresql://{name}:{SECRET}@{parts.hostname}:{parts.port}/{name}"
    conn = await superuser()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
    finally:
        await conn.close()


# -- 1. PostgreSQL outage ---------------------------------------------------------------------


async def test_postgres_outage_keeps_the_worker_up_and_rows_converge(
    bootstrap, database_url, secret_db, pipeline_env, start_worker, background
):
    # secret_db comes before start_worker: its database is dropped after the worker stops.
    server = devstack_postgres(database_url)
    per_partition, expected, total = build(seed=11, users=300)
    assert total > 3000
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(IDLE_ADVANCE="1h", DATABASE_URL=secret_db, WEB_PORT=web_port())
    await web_up(worker)

    async def connected():
        assert worker.alive(), worker.tail()
        status, stats = await api(worker, "/api/stats")
        return status == 200 and stats["sink"]["connected"]

    await wait_for(connected, timeout=90, interval=0.5, what="the sink to connect")
    producing = background(send_paced(bootstrap, topic, per_partition, seconds=45))

    async def writing():
        _, stats = await api(worker, "/api/stats")
        return stats["sink"]["rows_written"] > 0

    await wait_for(writing, timeout=60, interval=0.5, what="first rows in PostgreSQL")
    seen = {"errors": 0, "last_error": None, "health": None, "sink_up": None, "pending": 0}
    stopped_at = time.monotonic()
    try:
        await asyncio.to_thread(server.stop)
        assert not server.running()
        while time.monotonic() - stopped_at < OUTAGE_S:
            await asyncio.sleep(2)
            assert worker.alive(), f"worker died during the outage:\n{worker.tail()}"
            status, stats = await api(worker, "/api/stats")
            assert status == 200, stats
            sink = stats["sink"]
            seen["errors"] = max(seen["errors"], sink["errors"])
            seen["pending"] = max(seen["pending"], sink["pending_rows"])
            if sink["last_error"]:
                seen["last_error"] = sink["last_error"]
                assert sink["ok"] is False and sink["failing_since"], sink
            status, health = await api(worker, "/api/health")
            if status == 503:
                seen["health"] = health
            _, text = await api(worker, "/metrics")
            if isinstance(text, str) and metric(text, 'pipeline_sink_up{sink="postgres"}') == 0:
                seen["sink_up"] = 0
    finally:
        restart_started = time.monotonic()
        await ensure_postgres_up(server)
        restarted_at = time.monotonic()
    outage_s = restarted_at - stopped_at

    assert seen["errors"] > 0 and seen["last_error"], f"no sink error shown: {seen}"
    assert seen["sink_up"] == 0, "/metrics never showed the postgres sink down"
    assert seen["health"] is not None, "/api/health never reported the outage"
    assert seen["health"]["checks"]["postgres"]["ok"] is False
    for shown in (seen["last_error"], orjson.dumps(seen["health"]).decode()):
        assert SECRET not in shown

    sent = await producing
    await converge(worker, secret_db, expected, timeout=240)
    converged_s = time.monotonic() - restarted_at
    await lake_exactly_once(worker, pipeline_env["LAKE_DIR"], total)
    _, stats = await api(worker, "/api/stats")
    assert stats["sink"]["ok"] and stats["sink"]["consecutive_errors"] == 0, stats["sink"]
    assert stats["sink"]["target"] == secret_db.replace(f":{SECRET}@", ":***@")

    log = worker.log.read_text(errors="replace")
    assert_no_secret(log, SECRET)
    masked = re.escape(urlsplit(secret_db).username) + r":\*\*\*@"
    # one line when it went away, one when it was back (app/outages.py)
    gone = re.findall(r"postgres \(\S*" + masked + r"\S*\) cannot be reached since", log)
    assert gone, worker.tail()
    recovered = re.search(r"postgres \(\S*" + masked + r"\S*\) is back after (\S+) ", log)
    assert recovered, worker.tail()
    assert worker.alive()
    print(
        f"\npostgres outage: {sent} events, down {outage_s:.1f}s (restart took "
        f"{restarted_at - restart_started:.1f}s); sink errors seen {seen['errors']}, "
        f"max pending rows {seen['pending']}, last error {seen['last_error']!r}; rows "
        f"converged {converged_s:.1f}s after PostgreSQL was back (sink failing for "
        f"{recovered.group(1)} in all); total sink errors {stats['sink']['errors']}"
    )


# -- 2. Kafka broker restart ----------------------------------------------------------------


@pytest.mark.parametrize(
    "down_s",
    [
        pytest.param(3, id="restart"),
        # Longer than aiokafka's default 40 s delivery timeout, which used to expire the
        # source stage's batches and crash the worker (request_timeout_ms now).
        pytest.param(60, id="down-60s", marks=pytest.mark.slow),
    ],
)
async def test_kafka_broker_restart_mid_run_loses_and_doubles_nothing(
    bootstrap, pipeline_env, start_worker, background, down_s
):
    broker = devstack_kafka(bootstrap)
    per_partition, expected, total = build(seed=13, users=400)
    topic = pipeline_env["INPUT_TOPIC"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(IDLE_ADVANCE="1h", WEB_PORT=web_port())
    await web_up(worker)
    producing = background(send_paced(bootstrap, topic, per_partition, seconds=30))

    async def flowing():
        _, stats = await api(worker, "/api/stats")
        return stats["totals"]["events"] > total // 8

    await wait_for(flowing, timeout=60, interval=0.5, what="events flowing")
    stop_started = time.monotonic()
    try:
        await asyncio.to_thread(broker.stop)
        stopped_at = time.monotonic()
        assert not probes.is_kafka(broker.host, broker.port)
        while time.monotonic() - stopped_at < down_s:
            await asyncio.sleep(min(5, down_s))
            assert worker.alive(), f"worker died while the broker was down:\n{worker.tail()}"
    finally:
        await ensure_kafka_up(broker)
        back_at = time.monotonic()
    sent = await producing
    assert sent == total

    await converge(worker, pipeline_env["DATABASE_URL"], expected, timeout=300)
    converged_s = time.monotonic() - back_at
    in_lake = await lake_exactly_once(worker, pipeline_env["LAKE_DIR"], total)
    assert {p for p, _ in in_lake} == set(range(PARTITIONS))

    enriched = await enriched_exactly_once(bootstrap, pipeline_env["ENRICHED_TOPIC"], in_lake)
    assert worker.alive(), worker.tail()
    assert_no_secret(worker.log.read_text(errors="replace"), ":password@")
    print(
        f"\nkafka restart: {total} events; broker stop took {stopped_at - stop_started:.1f}s, "
        f"down {back_at - stopped_at:.1f}s in all; rows converged {converged_s:.1f}s after "
        f"it was back; lake {len(in_lake)} offsets once each; enriched {enriched} "
        f"records, no duplicates"
    )


# -- 3. Lake disk trouble ---------------------------------------------------------------------


async def test_lake_write_failure_keeps_rows_until_repaired(
    bootstrap, pipeline_env, start_worker, tmp_path
):
    """The lake is not part of the Kafka transactions: while it cannot be written, the
    Kafka outputs go on, the rows wait in memory (and are read again by a new owner),
    and after the repair the lake holds every offset exactly once."""
    per_partition, expected, total = build(seed=17, users=200, span_min=30)
    topic, group = pipeline_env["INPUT_TOPIC"], pipeline_env["APP_ID"]
    lake_dir = Path(pipeline_env["LAKE_DIR"])
    away = tmp_path / "lake-away"
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(IDLE_ADVANCE="1h", WEB_PORT=web_port())
    await web_up(worker)

    first, rest = split(per_partition, 1 / 3)
    await send_paced(bootstrap, topic, first, seconds=1)
    n_first = sum(len(s) for s in first)
    await lake_exactly_once(worker, lake_dir, n_first, timeout=60)

    broken_at = time.monotonic()
    try:
        # We run as root, so permissions do not stop writes: a file where the folder was
        # makes every mkdir/open under LAKE_DIR fail (NotADirectoryError/FileExistsError).
        lake_dir.rename(away)
        lake_dir.write_text("not a folder\n")
        await send_paced(bootstrap, topic, rest, seconds=2)
        high = await end_offsets(bootstrap, topic)
        assert sum(high.values()) == total
        await lake_failing(worker)
        detected_s = time.monotonic() - broken_at

        async def kafka_went_on():
            assert worker.alive(), f"worker died with the lake broken:\n{worker.tail()}"
            got = await committed_offsets(bootstrap, group, topic)
            return True if got == high else f"committed {got}, end {high}"

        await wait_for(kafka_went_on, timeout=60, interval=1, what="Kafka outputs to the end")
        in_lake_while_broken = Counter(lake_offsets(away))
        assert len(in_lake_while_broken) < total, "the broken lake was written"
        _, stats = await api(worker, "/api/stats")
        lake_stats = stats["lake"]
        assert lake_stats["errors"] > 0 and lake_stats["ok"] is False, lake_stats
        assert lake_stats["buffered_rows"] >= total - len(in_lake_while_broken), lake_stats
        _, text = await api(worker, "/metrics")
        assert metric(text, 'pipeline_sink_up{sink="lake"}') == 0
        errors_while_broken = lake_stats["errors"]
    finally:
        if lake_dir.is_file():
            lake_dir.unlink()
        if away.exists():
            away.rename(lake_dir)
    repaired_at = time.monotonic()
    broken_s = repaired_at - broken_at

    in_lake = await lake_exactly_once(worker, lake_dir, total, timeout=90)
    landed_s = time.monotonic() - repaired_at
    status, health = await api(worker, "/api/health")
    assert status == 200 and health["checks"]["lake"]["ok"], health
    await converge(worker, pipeline_env["DATABASE_URL"], expected, timeout=120)
    log = worker.log.read_text(errors="replace")
    assert f"lake ({lake_dir}) cannot be written since" in log, worker.tail()
    assert re.search(r"lake \(\S+\) is back after ", log), worker.tail()
    assert_no_secret(log, ":password@")
    print(
        f"\nlake broken {broken_s:.1f}s: error visible after {detected_s:.1f}s, "
        f"{errors_while_broken} failed writes, Kafka outputs committed to the end meanwhile; "
        f"after repair all {len(in_lake)} offsets in the lake once within {landed_s:.1f}s"
    )


# -- 4. Security basics -----------------------------------------------------------------------


def non_loopback_addresses() -> list[str]:
    """This machine's IPv4/IPv6 addresses other than loopback and link-local."""
    found: set[str] = set()
    if shutil.which("ip"):
        out = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        found.update(re.findall(r"\binet6? ([0-9a-fA-F.:]+)/", out))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # no packet is sent; only picks a route
            found.add(probe.getsockname()[0])
    except OSError:
        pass
    return sorted(
        a
        for a in found
        if not (
            a.startswith("127.") or a == "::1" or a.lower().startswith("fe80") or a == "0.0.0.0"
        )
    )


async def test_web_server_binds_loopback_by_default(pipeline_env, start_worker):
    # Unset, not empty: Faust reads WEB_HOST and WEB_BIND itself (and chokes on "").
    for name in ("WEB_HOST", "WEB_BIND"):
        pipeline_env.pop(name, None)
    worker = start_worker(WEB_PORT=web_port())
    await web_up(worker)
    port = int(worker.env["WEB_PORT"])
    assert probes.port_open("127.0.0.1", port)
    others = non_loopback_addresses()
    if not others:
        pytest.skip("this machine has no non-loopback address to try")
    for address in others:
        assert not probes.port_open(address, port, timeout=1.0), (
            f"the web server answers on {address}:{port}; it must bind 127.0.0.1 by default"
        )
    assert_no_secret(worker.log.read_text(errors="replace"), ":password@")


async def test_database_url_sslmode_reaches_asyncpg(fresh_db):
    """`?sslmode=require` is honoured: devstack's server has no TLS, so it is refused."""
    sink = PostgresSink(fresh_db + "?sslmode=require", ssl_rootcert=None)
    with pytest.raises((ConnectionError, OSError, asyncpg.PostgresError)) as refused:
        await sink.connect()
    assert "SSL" in str(refused.value), refused.value
    assert sink.pool is None
    plain = PostgresSink(fresh_db + "?sslmode=disable", ssl_rootcert=None)
    await plain.connect()
    try:
        query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        assert await plain.pool.fetchval(query) is False
    finally:
        await plain.pool.close()


# -- 5. Graceful stop while records wait for the lake ---------------------------------------


async def test_sigterm_with_unflushed_records_stops_gracefully(
    bootstrap, pipeline_env, start_worker
):
    per_partition, _, total = build(seed=19, users=80, span_min=20)
    topic, app_id = pipeline_env["INPUT_TOPIC"], pipeline_env["APP_ID"]
    await create_topic(bootstrap, topic, PARTITIONS)
    worker = start_worker(IDLE_ADVANCE="1h", LAKE_FLUSH="10m", WEB_PORT=web_port())
    await web_up(worker)
    await send_paced(bootstrap, topic, per_partition, seconds=1)

    async def all_read_none_flushed():
        _, stats = await api(worker, "/api/stats")
        return stats["totals"]["events"] == total or f"{stats['totals']['events']}/{total}"

    await wait_for(all_read_none_flushed, timeout=60, interval=0.5, what="every record read")
    assert lake_offsets(pipeline_env["LAKE_DIR"]) == []
    started = time.monotonic()
    # a graceful stop whatever the machine's load (how fast it stops, SHUTDOWN_TIMEOUT,
    # is test_outages.py's, slow): a SIGKILL after 120 s fails the exit code below
    await asyncio.to_thread(worker.stop, signal.SIGTERM, 120)
    took = time.monotonic() - started
    print(
        f"\nSIGTERM with {total} unflushed records: exit code {worker.proc.returncode} "
        f"after {took:.1f}s"
    )
    assert worker.proc.returncode == 0, f"not a graceful stop ({took:.1f}s):\n{worker.tail()}"
    assert len(set(lake_offsets(pipeline_env["LAKE_DIR"]))) == total
    assert await committed_offsets(bootstrap, app_id, topic) == await end_offsets(bootstrap, topic)
