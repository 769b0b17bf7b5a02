"""A PostgreSQL server from the machine's binaries, in the state folder."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from devstack import probes
from devstack.process import StackError, say, tail, wait_until

PG_HINT = "Install the PostgreSQL server (Debian: `apt-get install postgresql`)."


def find_bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    raise StackError(f"PostgreSQL server binaries (initdb, pg_ctl) not found. {PG_HINT}")


@dataclass
class PostgresServer:
    state: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 5432

    @property
    def home(self) -> Path:
        return self.state / "postgres"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def log(self) -> Path:
        return self.home / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        # Unix socket paths are limited to ~107 bytes; deep checkouts fall back to /tmp.
        if len(str(self.home)) < 80:
            return self.home
        digest = hashlib.sha1(str(self.home).encode()).hexdigest()[:10]
        return Path(f"/tmp/devstack-pg-{digest}")

    @property
    def credentials(self) -> tuple[str, str, str]:
        parts = urlsplit(self.database_url)
        return (
            unquote(parts.username or "user"),
            unquote(parts.password or "password"),
            parts.path.lstrip("/") or "stream_data",
        )

    def url(self) -> str:
        parts = urlsplit(self.database_url)
        login = f"{parts.username or 'user'}:{parts.password or 'password'}"
        return f"postgresql://{login}@{self.host}:{self.port}/{self.credentials[2]}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        # initdb and postgres refuse to run as root.
        if os.geteuid() == 0:
            return ["runuser", "-u", self._owner(), "--", *argv]
        return argv

    def _owner(self) -> str:
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackError(
                "running as root and no `postgres` system user exists to own the database "
                f"(create one: `useradd --system postgres`). {PG_HINT}"
            ) from exc
        return "postgres"

    def _chown(self, *paths: Path) -> None:
        if os.geteuid() == 0:
            owner = pwd.getpwnam(self._owner())
            for path in paths:
                os.chown(path, owner.pw_uid, owner.pw_gid)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists() and probes.is_postgres(self.host, self.port)

    def _run(self, argv: list[str], what: str) -> subprocess.CompletedProcess:
        result = subprocess.run(self._as_owner(argv), capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(
                f"postgres: {what} failed:\n{result.stdout}{result.stderr}"
                f"\nLast lines of {self.log}:\n{tail(self.log)}"
            )
        return result

    def start(self, deadline_s: float = 60.0) -> None:
        bindir = find_bindir()
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._chown(self.home, self.socket_dir)
        if os.geteuid() == 0:
            check = subprocess.run(self._as_owner(["test", "-w", str(self.home)]))
            if check.returncode != 0:
                raise StackError(
                    f"the postgres user cannot write {self.home}: a parent folder is not "
                    "searchable by it. Set STATE_DIR to a folder under /tmp or make the "
                    "checkout's parents world-searchable (chmod o+x)."
                )
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
                "initdb",
            )
        self.log.touch()
        self._chown(self.log)
        started = time.monotonic()
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host} "
            "-c fsync=off -c synchronous_commit=off -c max_connections=200"
        )
        result = subprocess.run(
            self._as_owner(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    str(int(deadline_s)),
                    "start",
                ]
            ),
            capture_output=True,
            text=True,
        )
        ready = result.returncode == 0 and wait_until(
            lambda: probes.is_postgres(self.host, self.port), 10, alive=lambda: True
        )
        if not ready:
            raise StackError(
                f"postgres did not start on {self.host}:{self.port}:\n"
                f"{result.stdout}{result.stderr}\nLast lines of {self.log}:\n"
                f"{tail(self.log)}"
            )
        self.provision(bindir)
        say(f"postgres: ready on {self.host}:{self.port} in {time.monotonic() - started:.1f}s")

    def provision(self, bindir: Path) -> None:
        """DATABASE_URL's role (its password kept current) and database."""
        user, password, db = self.credentials

        def sql(statement: str, what: str) -> str:
            """`statement` run as the superuser over the socket: its output."""
            psql = [str(bindir / "psql"), "-h", str(self.socket_dir), "-p", str(self.port)]
            psql += ["-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt", "-d", "postgres"]
            return self._run([*psql, "-c", statement], what).stdout.strip()

        exists = sql(
            f"SELECT 'exists' FROM pg_roles WHERE rolname = {_literal(user)}", "role lookup"
        )
        verb = "ALTER" if exists else "CREATE"
        login = f"LOGIN CREATEDB PASSWORD {_literal(password)}"
        sql(f"{verb} ROLE {_ident(user)} {login}", "role setup")
        if not sql(f"SELECT 1 FROM pg_database WHERE datname = {_literal(db)}", "database lookup"):
            sql(f"CREATE DATABASE {_ident(db)} OWNER {_ident(user)}", "createdb")

    def stop(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        bindir = find_bindir()
        subprocess.run(
            self._as_owner(
                [str(bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"]
            ),
            capture_output=True,
            text=True,
        )
        return True


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
