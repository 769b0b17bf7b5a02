"""Bring up (or reuse) Kafka, PostgreSQL and, for a lake on S3, an S3 server; tell where.

The S3 server (devstack/s3.py) is started when the lake is configured on S3 with an
endpoint on this machine (`LAKE_URI=s3://...` and `AWS_ENDPOINT_URL=http://127.0.0.1:...`
in the environment or `.env`), or when asked (`up(s3=True)`, the tests); otherwise the
lake is a folder and nothing more runs.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from devstack import probes
from devstack.kafka import KafkaBroker
from devstack.postgres import PostgresServer, find_bindir
from devstack.process import StackError, read_pid, say
from devstack.s3 import S3Server, is_s3

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_DATABASE_URL = "postgresql://user:password@localhost:5432/stream_data"
DEFAULT_S3_ENDPOINT = "http://127.0.0.1:9000"


def state_dir() -> Path:
    return Path(os.environ.get("STATE_DIR") or ROOT / ".state").resolve()


def read_dotenv(path: Path = ROOT / ".env") -> dict[str, str]:
    values: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.removeprefix("export ").partition("=")
                values[key.strip()] = value.strip().strip("'\"")
    return values


def setting(name: str) -> str | None:
    """A pipeline setting as the worker reads it: ACTIVITY_<name>, or the old name."""
    return configured(f"ACTIVITY_{name}") or configured(name)


def configured(name: str) -> str | None:
    """The pipeline's setting `name` (ACTIVITY_<name>, else the deprecated <name>)."""
    dotenv = read_dotenv()
    for key in (f"ACTIVITY_{name}", name):
        value = os.environ.get(key) or dotenv.get(key)
        if value:
            return value
    return None


@dataclass
class StackInfo:
    bootstrap: str | None = None
    database_url: str | None = None
    s3: S3Server | None = None

    def exports(self) -> str:
        lines = []
        if self.bootstrap:
            lines.append(f"export KAFKA_BOOTSTRAP_SERVERS={self.bootstrap}")
        if self.database_url:
            lines.append(f"export DATABASE_URL={self.database_url}")
        if self.s3:
            lines += [f"export {k}={v}" for k, v in self.s3.environment().items()]
        return "\n".join(lines)


def _choose_port(
    service: str, variable: str, host: str, port: int, explicit: bool, is_it: callable
) -> tuple[int, bool]:
    """Return (port, already_running)."""
    if is_it(host, port):
        return port, True
    if not probes.local_host(host):
        raise StackError(
            f"{variable} points at {host}:{port}, where no {service} answers; "
            "the launcher starts services on this machine only."
        )
    if probes.port_free("127.0.0.1", port):
        return port, False
    if explicit:
        raise StackError(
            f"port {port} ({variable}) is held by a program that is not {service}. "
            f"Stop it (`ss -ltnp 'sport = :{port}'` shows which) or set {variable} to a free port."
        )
    free = probes.next_free_port("127.0.0.1", port + 1)
    say(f"{service}: port {port} is taken by another program; using {free}")
    return free, False


def ensure_kafka() -> str:
    broker = KafkaBroker(state_dir())
    if broker.running_pid() is not None:
        port = int((broker.home / "layout.txt").read_text().split()[0])
        if probes.is_kafka("127.0.0.1", port):
            return f"127.0.0.1:{port}"
    wanted = setting("KAFKA_BOOTSTRAP_SERVERS")
    host, port = probes.split_bootstrap(wanted or DEFAULT_BOOTSTRAP)
    port, running = _choose_port(
        "Kafka",
        "KAFKA_BOOTSTRAP_SERVERS",
        host,
        port,
        explicit=wanted is not None,
        is_it=probes.is_kafka,
    )
    if running:
        say(f"kafka: using the broker already running at {host}:{port}")
        return wanted or f"{host}:{port}"
    broker.port = port
    broker.start()
    return broker.bootstrap


def _login_works(url: str) -> bool:
    psql = find_bindir() / "psql"
    result = subprocess.run(
        [str(psql), url, "-qAtc", "SELECT 1"],
        capture_output=True,
        text=True,
        env={**os.environ, "PGCONNECT_TIMEOUT": "3"},
    )
    return result.returncode == 0


def ensure_postgres() -> str:
    wanted = setting("DATABASE_URL")
    server = PostgresServer(state_dir(), wanted or DEFAULT_DATABASE_URL)
    port_file = server.home / "port.txt"
    if port_file.exists():
        server.port = int(port_file.read_text())
        if server.running():
            server.provision(find_bindir())  # cheap; keeps roles current with this version
            return server.url()
    host, port = probes.split_database_url(wanted or DEFAULT_DATABASE_URL)
    port, running = _choose_port(
        "PostgreSQL",
        "DATABASE_URL",
        host,
        port,
        explicit=wanted is not None,
        is_it=probes.is_postgres,
    )
    if running:
        url = wanted or DEFAULT_DATABASE_URL
        if not _login_works(url):
            raise StackError(
                f"a PostgreSQL server answers at {host}:{port} but refuses DATABASE_URL's "
                "user, password or database. Create them there, or point DATABASE_URL at "
                "another port and the launcher will start its own server."
            )
        say(f"postgres: using the server already running at {host}:{port}")
        return url
    server.port = port
    server.start()
    port_file.write_text(str(port))
    return server.url()


def lake_on_local_s3() -> bool:
    """Is the lake configured on S3 at an endpoint on this machine?"""
    lake = setting("LAKE_URI") or setting("LAKE_DIR") or ""
    if not lake.lower().startswith(("s3://", "s3a://")):
        return False
    endpoint = configured("AWS_ENDPOINT_URL")
    if not endpoint:
        return False  # Amazon S3 itself
    return probes.local_host(urlsplit(endpoint).hostname or "")


def ensure_s3(buckets: tuple[str, ...] = ()) -> S3Server:
    """devstack's S3 server: reused if it runs, else started (built on first use).

    Its endpoint and keys are AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and
    AWS_SECRET_ACCESS_KEY when configured, else http://127.0.0.1:9000 and devstack's
    keys; the bucket of LAKE_URI is created as well as `buckets`.
    """
    home = state_dir() / "s3"
    endpoint = urlsplit(configured("AWS_ENDPOINT_URL") or DEFAULT_S3_ENDPOINT)
    keys = {
        "access_key": configured("AWS_ACCESS_KEY_ID"),
        "secret_key": configured("AWS_SECRET_ACCESS_KEY"),
    }
    server = S3Server(home, **{k: v for k, v in keys.items() if v})
    lake = setting("LAKE_URI") or setting("LAKE_DIR") or ""
    if lake.lower().startswith(("s3://", "s3a://")):
        buckets = (*buckets, urlsplit(lake).netloc)
    port_file = home / "port.txt"
    if server.running_pid() is not None and port_file.exists():
        server.port = int(port_file.read_text())
        if is_s3(server.host, server.port):
            for bucket in buckets:
                server.create_bucket(bucket)
            return server
    host, port = endpoint.hostname or "127.0.0.1", endpoint.port or 80
    explicit = configured("AWS_ENDPOINT_URL") is not None
    if not explicit and is_s3(host, port):  # someone else's: ours goes elsewhere
        port = probes.next_free_port("127.0.0.1", port + 1)
        say(f"s3: port {endpoint.port or 80} has an S3 server devstack did not start; using {port}")
    port, running = _choose_port(
        "an S3 server", "AWS_ENDPOINT_URL", host, port, explicit=explicit, is_it=is_s3
    )
    server.port = port
    if running:  # AWS_ENDPOINT_URL names it: use it as it is, like Kafka and PostgreSQL
        server.external = True
        say(
            f"s3: using the S3 server already running at {host}:{port}; its buckets are its "
            f"own business (the lake needs {', '.join(buckets) or 'its bucket'})"
        )
        return server
    server.start(buckets)
    return server


def up(
    kafka: bool = True, postgres: bool = True, s3: bool | None = None, progress=None
) -> StackInfo:
    """Kafka and PostgreSQL; the S3 server too when `s3`, or (None) when the lake is
    configured on a local S3 endpoint. `progress(text)`, when given, is told each step
    before it starts."""
    progress = progress or (lambda text: None)
    if s3 is None:
        s3 = lake_on_local_s3()
    if kafka:
        progress("Kafka: starting or reusing one (the first run fetches its jars from Maven)")
    bootstrap = ensure_kafka() if kafka else None
    if postgres:
        progress("PostgreSQL: starting or reusing one")
    database_url = ensure_postgres() if postgres else None
    if s3:
        progress("S3 server: starting or reusing one (the first run builds it with Go)")
    info = StackInfo(bootstrap=bootstrap, database_url=database_url, s3=ensure_s3() if s3 else None)
    state = state_dir()
    state.mkdir(parents=True, exist_ok=True)
    (state / "stack.env").write_text(info.exports() + "\n")
    return info


def started() -> list[str]:
    """What this state folder's launcher started and is still running, e.g. `Kafka at ...`.

    Services that were reused (already answering elsewhere) are not listed: `down()`
    leaves them alone too.
    """
    found = []
    state = state_dir()
    broker = KafkaBroker(state)
    pid = broker.running_pid()
    if pid is not None:
        found.append(f"Kafka at 127.0.0.1:{_first_word(broker.home / 'layout.txt')} (pid {pid})")
    server = PostgresServer(state, DEFAULT_DATABASE_URL)
    pid = read_pid(server.data / "postmaster.pid")
    if pid is not None:
        found.append(f"PostgreSQL at 127.0.0.1:{_first_word(server.home / 'port.txt')} (pid {pid})")
    s3 = S3Server(state / "s3")
    pid = s3.running_pid()
    if pid is not None:
        found.append(f"S3 (versitygw) at 127.0.0.1:{_first_word(s3.home / 'port.txt')} (pid {pid})")
    return found


def _first_word(path: Path) -> str:
    try:
        return path.read_text().split()[0]
    except (OSError, IndexError):
        return "?"


def down() -> list[str]:
    stopped = []
    state = state_dir()
    if KafkaBroker(state).stop():
        stopped.append("kafka")
    if PostgresServer(state, DEFAULT_DATABASE_URL).stop():
        stopped.append("postgres")
    if S3Server(state / "s3").stop():
        stopped.append("s3")
    (state / "stack.env").unlink(missing_ok=True)
    return stopped
