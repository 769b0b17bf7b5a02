"""docker-compose.yml and .env.example agree with the code.

The settings and commands they must match: docs/contract.md, Configuration and Commands.

No Docker engine is needed: the file is parsed with PyYAML, and `docker compose
config` (a client-side check) runs only where the compose CLI is installed.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings import Settings
from app.sinks.lake.location import SCHEMES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
_ENV_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _env_name(field_name: str) -> str:
    return Settings.env_name(field_name)


def _env_example() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ENV_LINE.match(stripped)
        assert match, f".env.example: not a NAME=value line: {line!r}"
        assert match.group(1) not in found, f".env.example: {match.group(1)} twice"
        found[match.group(1)] = match.group(2)
    return found


def _compose_cli() -> list[str] | None:
    """`docker compose`, else a standalone `docker-compose` v2, else None."""
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for cli in candidates:
        try:
            probe = subprocess.run(
                [*cli, "version"], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        # Compose v1 (Python, `docker-compose version 1.29`) predates parts of the file format.
        if probe.returncode == 0 and not re.search(r"version v?1\.", probe.stdout):
            return cli
    return None


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _depends_on(service: dict) -> dict:
    deps = service.get("depends_on") or {}
    assert isinstance(deps, dict), "depends_on must be the long form (with conditions)"
    return deps


def test_docker_compose_config_accepts_the_file() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose CLI (plugin or standalone v2) on this machine")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_no_version_key_and_the_four_services(compose: dict, services: dict) -> None:
    assert "version" not in compose
    assert {"kafka", "postgres", "worker", "producer"} <= set(services)


def test_kafka_is_official_4x_kraft_with_two_listeners(services: dict) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:4")
    env = _environment(kafka)
    assert "controller" in env["KAFKA_PROCESS_ROLES"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"]
    advertised = env["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:19092" in advertised
    assert "localhost:9092" in advertised
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert any(str(p).split(":")[0] == "9092" for p in kafka.get("ports", []))


def test_postgres_mounts_init_db_and_matches_default_url(services: dict) -> None:
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:15.")
    mounts = [str(v) for v in postgres.get("volumes", [])]
    init = [m.split(":")[0] for m in mounts if ":/docker-entrypoint-initdb.d/" in m]
    assert init == ["./app/sinks/init-db.sql"], mounts
    # the DDL the worker runs itself, a regular file (a symlink reaches PostgreSQL as a
    # path where checkouts do not make symlinks)
    from app.sinks.postgres import DDL

    path = ROOT / init[0]
    assert not path.is_symlink() and path.resolve() == DDL.resolve()
    assert not (ROOT / "init-db.sql").is_symlink(), "no symlinked init-db.sql at the top"
    env = _environment(postgres)
    default_url = Settings().database_url
    assert f"{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}@" in default_url
    assert default_url.endswith(f"/{env['POSTGRES_DB']}")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_dependencies_wait_for_healthy_services(services: dict) -> None:
    worker = _depends_on(services["worker"])
    producer = _depends_on(services["producer"])
    assert worker["kafka"]["condition"] == "service_healthy"
    assert worker["postgres"]["condition"] == "service_healthy"
    assert producer["topics"]["condition"] == "service_completed_successfully"
    assert _depends_on(services["topics"])["kafka"]["condition"] == "service_healthy"


def test_every_dependency_target_has_a_healthcheck(services: dict) -> None:
    for name in ("kafka", "postgres", "s3", "worker"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable", False)


def test_worker_can_be_scaled_and_its_dashboard_is_published(services: dict) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    # a host port range: one port per replica, as many as the topics have partitions
    (published,) = [str(p) for p in worker["ports"]]
    host, container = published.rsplit(":", 1)
    low, high = (int(x) for x in host.split("-"))
    assert int(container) == int(_environment(worker)["WEB_PORT"]) == low == 6066
    assert high - low + 1 == int(_environment(worker)["PARTITIONS"])


def test_worker_environment_points_at_the_containers(compose: dict, services: dict) -> None:
    env = _environment(services["worker"])
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["WEB_HOST"] == "0.0.0.0"
    assert env["STATE_DIR"]
    # the lake is on the s3 service, shared through the object store, not a volume
    lake = Settings.from_env(env).lake
    assert lake.uri == "s3://lake/events" and not lake.local
    assert lake.storage_options["AWS_ENDPOINT_URL"] == "http://s3:9000"
    s3_env = _environment(services["s3"])
    assert lake.storage_options["AWS_ACCESS_KEY_ID"] == s3_env["ROOT_ACCESS_KEY"]
    assert lake.storage_options["AWS_SECRET_ACCESS_KEY"] == s3_env["ROOT_SECRET_KEY"]
    assert "mkdir -p /data/lake" in " ".join(services["s3"]["command"])  # the bucket
    mounts = [str(v) for v in services["worker"].get("volumes", [])]
    assert mounts == [env["STATE_DIR"]], "workers share no volume; state: an anonymous one"


def test_the_s3_service_is_the_server_devstack_runs(services: dict) -> None:
    from devstack.s3 import MODULE, VERSION

    build = services["s3"]["build"]["dockerfile_inline"]
    assert f"go install {MODULE}@{VERSION}" in build
    assert _depends_on(services["worker"])["s3"]["condition"] == "service_healthy"


def test_producer_runs_the_simulator(services: dict) -> None:
    producer = services["producer"]
    command = producer["command"]
    if isinstance(command, str):
        command = command.split()
    assert command == ["python", "-m", "producer", "--rate", "200", "--users", "500"]
    assert _environment(producer)["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert producer.get("build") == services["worker"].get("build")


def test_env_example_lists_exactly_the_settings() -> None:
    listed = _env_example()
    # lake_options is no variable of its own: the AWS_*/GOOGLE_*/AZURE_* ones (commented)
    settings = {_env_name(f.name) for f in dataclasses.fields(Settings)} - {
        _env_name("lake_options")
    }
    assert sorted(set(listed) - settings) == [], "in .env.example but not a Settings field"
    assert sorted(settings - set(listed)) == [], "Settings fields missing from .env.example"


def test_env_example_values_are_the_defaults() -> None:
    """Every value in .env.example parses to the dataclass default."""
    listed = _env_example()
    assert Settings.from_env(listed) == Settings()


def test_env_example_holds_no_secrets() -> None:
    """Secret settings are listed empty; the only password is the documented dev default."""
    listed = _env_example()
    for name, value in listed.items():
        if "PASSWORD" in name or name.endswith(("_KEYFILE", "_USERNAME")):
            assert value == "", f".env.example: {name} must be empty (set it in .env)"
    assert listed["ACTIVITY_DATABASE_URL"] == Settings().database_url
    assert listed["ACTIVITY_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored, ".env holds secrets: git must ignore it"
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), "keep .env out of images"


def test_scaled_workers_share_the_lake_and_nothing_else(compose: dict, services: dict) -> None:
    """`docker compose up --scale worker=3` (README): replicas differ only by container,
    and share the lake through the object store (no volume), as on several hosts."""
    worker = services["worker"]
    assert "hostname" not in worker, "a fixed hostname gives replicas the same worker id"
    env = _environment(worker)
    mounts = [str(v) for v in worker.get("volumes", [])]
    # state on an anonymous volume (per container); the lake is on s3, not a volume
    assert mounts == [env["STATE_DIR"]], mounts
    assert "APP_ID" in env, "replicas must share one consumer group"
    assert env["LAKE_URI"].startswith("s3://")
    # The image owns /data (a folder lake, LAKE_DIR=/data/lake, is writable by its user).
    dockerfile = (ROOT / "Dockerfile").read_text()
    owned = r"mkdir -p /data/lake /data/state\s*\\\s*&& chown -R app:app /data"
    assert re.search(owned, dockerfile)
    assert re.search(r"^USER app$", dockerfile, re.M)
    check = " ".join(str(part) for part in worker["healthcheck"]["test"])
    assert "127.0.0.1:6066/api/health" in check, "the real health endpoint, in the container"


def _setting_names() -> set[str]:
    """Every variable the worker reads: ACTIVITY_* and the deprecated unprefixed names."""
    fields = dataclasses.fields(Settings)
    return {Settings.env_name(f.name) for f in fields} | {
        Settings.env_name(f.name, prefix="") for f in fields
    }


def test_every_app_variable_is_a_setting_the_worker_reads(services: dict) -> None:
    """A misspelt variable in the file would be ignored by the containers (issue 30)."""
    names = _setting_names()
    # the lake's object store reads its own variables (app/sinks/lake/location.py)
    store = tuple({p for prefixes in SCHEMES.values() for p in prefixes})
    for service in ("worker", "producer"):
        unknown = sorted(
            n for n in set(_environment(services[service])) - names if not n.startswith(store)
        )
        assert unknown == [], f"{service}: {unknown} are not settings (app/settings.py)"
    dockerfile = (ROOT / "Dockerfile").read_text()
    block = re.search(r"^ENV PYTHONPATH=/app \\\n((?:\s+\w+=\S+(?: \\)?\n)+)", dockerfile, re.M)
    assert block, "the Dockerfile's ENV block of settings"
    for name in re.findall(r"(\w+)=", block.group(1)):
        assert name in names, f"Dockerfile ENV {name} is not a setting"


def test_image_tags_are_pinned_and_kafka_is_the_version_everywhere(services: dict) -> None:
    images = [s["image"] for s in services.values() if "image" in s]
    for image in images:
        tag = image.partition(":")[2]
        assert re.fullmatch(r"\d+\.\d+(\.\d+)?", tag), f"{image}: pin a version"
    pom = (ROOT / "devstack" / "pom.xml").read_text()
    kafka_version = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom).group(1)
    kafka_images = {i for i in images if i.startswith("apache/kafka:")}
    assert kafka_images == {f"apache/kafka:{kafka_version}"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.\d+\.\d+-slim-\w+$", dockerfile, re.M)


def test_topics_are_created_before_the_worker_and_producer_start(services: dict) -> None:
    topics = services["topics"]
    script = " ".join(str(part) for part in topics["command"])
    settings = Settings()
    for topic in (settings.input_topic, settings.enriched_topic, settings.dlq_topic):
        assert topic in script, topic
    assert f"--partitions {_environment(services['worker'])['PARTITIONS']}" in script
    assert "--if-not-exists" in script
    assert topics["image"] == services["kafka"]["image"]
    for name in ("worker", "producer"):
        deps = _depends_on(services[name])
        assert deps["topics"]["condition"] == "service_completed_successfully", name
