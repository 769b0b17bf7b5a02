"""Bring up (or reuse) Kafka and PostgreSQL and tell where they are."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack import probes
from devstack.kafka import KafkaBroker
from devstack.postgres import PostgresServer, find_bindir
from devstack.process import StackError, read_pid, say

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BOOTSTRAP = "localhost:9092"
DEFAULT_DATABASE_URL = "postgresql://user:password@localhost:5432/stream_data"


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

    def exports(self) -> str:
        lines = []
        if self.bootstrap:
            lines.append(f"export KAFKA_BOOTSTRAP_SERVERS={self.bootstrap}")
        if self.database_url:
            lines.append(f"export DATABASE_URL={self.database_url}")
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
    setting = configured("KAFKA_BOOTSTRAP_SERVERS")
    host, port = probes.split_bootstrap(setting or DEFAULT_BOOTSTRAP)
    port, running = _choose_port(
        "Kafka",
        "KAFKA_BOOTSTRAP_SERVERS",
        host,
        port,
        explicit=setting is not None,
        is_it=probes.is_kafka,
    )
    if running:
        say(f"kafka: using the broker already running at {host}:{port}")
        return setting or f"{host}:{port}"
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
    setting = configured("DATABASE_URL")
    server = PostgresServer(state_dir(), setting or DEFAULT_DATABASE_URL)
    port_file = server.home / "port.txt"
    if port_file.exists():
        server.port = int(port_file.read_text())
        if server.running():
            server.provision(find_bindir())  # cheap; keeps roles current with this version
            return server.url()
    host, port = probes.split_database_url(setting or DEFAULT_DATABASE_URL)
    port, running = _choose_port(
        "PostgreSQL",
        "DATABASE_URL",
        host,
        port,
        explicit=setting is not None,
        is_it=probes.is_postgres,
    )
    if running:
        url = setting or DEFAULT_DATABASE_URL
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


def up(kafka: bool = True, postgres: bool = True, progress=None) -> StackInfo:
    """`progress(text)`, when given, is told each step before it starts."""
    progress = progress or (lambda text: None)
    if kafka:
        progress("Kafka: starting or reusing one (the first run fetches its jars from Maven)")
    bootstrap = ensure_kafka() if kafka else None
    if postgres:
        progress("PostgreSQL: starting or reusing one")
    info = StackInfo(bootstrap=bootstrap, database_url=ensure_postgres() if postgres else None)
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
    (state / "stack.env").unlink(missing_ok=True)
    return stopped
