"""An S3-compatible server for the lake: the Versity S3 gateway over a local folder.

The gateway (github.com/versity/versitygw, Apache-2.0) is a Go program: built once
from the Go module proxy with `go install` into the state folder (about 2 minutes
the first time; Go's module cache keeps the sources), started with its `posix`
backend, which serves every sub-folder of its root as a bucket. It implements S3's
conditional writes (`If-None-Match: *`, `If-Match`), which delta-rs uses to let
exactly one of several writers commit each table version
(tests/integration/test_lake_s3.py checks that on this version).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devstack.process import Background, StackError, require, say

MODULE = "github.com/versity/versitygw/cmd/versitygw"
VERSION = "v1.8.0"
GO_HINT = (
    "Install Go 1.21 or newer (https://go.dev/dl; it fetches the toolchain versitygw "
    f"{VERSION} needs, Go 1.25, by itself); devstack then builds the S3 server with "
    f"`go install {MODULE}@{VERSION}`."
)
REGION = "us-east-1"
DEFAULT_ACCESS_KEY = "devstack"
DEFAULT_SECRET_KEY = "devstack-secret-key"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def is_s3(host: str, port: int, timeout: float = 2.0) -> bool:
    """An anonymous `GET /` to an S3 server is answered with an S3 XML error."""
    request = f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            reply = b""
            while len(reply) < 4096:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
                if b"</Error>" in reply or b"</ListAllMyBucketsResult>" in reply:
                    break
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and (
        b"<Error>" in reply or b"<ListAllMyBucketsResult" in reply
    )


def binary(state: Path) -> Path:
    """The gateway's executable, built into the state folder on first use."""
    bindir = state / "s3" / f"bin-{VERSION}"
    exe = bindir / "versitygw"
    if exe.exists():
        return exe
    go = require("go", GO_HINT)
    bindir.mkdir(parents=True, exist_ok=True)
    say(f"s3: building versitygw {VERSION} with `go install` (first run only, ~2 min)...")
    started = time.monotonic()
    result = subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"],
        capture_output=True,
        text=True,
        env={**os.environ, "GOBIN": str(bindir), "CGO_ENABLED": "0"},
    )
    if result.returncode != 0 or not exe.exists():
        raise StackError(
            f"`go install {MODULE}@{VERSION}` failed (is the Go module proxy reachable?):\n"
            + (result.stdout + result.stderr)[-3000:]
            + f"\n{GO_HINT}"
        )
    say(f"s3: versitygw built in {time.monotonic() - started:.0f}s")
    return exe


@dataclass
class S3Server:
    """One gateway: its root folder (the buckets), port and keys."""

    home: Path  # state/s3, or a test's own folder
    port: int = 9000
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = field(default=DEFAULT_SECRET_KEY, repr=False)
    host: str = "127.0.0.1"
    binary_state: Path | None = None  # where the built binary lives (default: home's parent)
    external: bool = False  # a server devstack did not start (its folders are not ours)

    @property
    def root(self) -> Path:
        return self.home / "data"

    @property
    def process(self) -> Background:
        return Background(self.home / "versitygw.log", self.home / "versitygw.pid")

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def running_pid(self) -> int | None:
        return self.process.running_pid()

    def environment(self) -> dict[str, str]:
        """The storage options a lake on this server needs (app/sinks/lake/location.py)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def create_bucket(self, name: str) -> None:
        """A bucket is a folder of the root (the posix backend)."""
        if self.external:
            raise StackError(f"create the bucket {name!r} on the S3 server at {self.endpoint}")
        if not _BUCKET.match(name):
            raise StackError(f"{name!r} is not a valid bucket name (3-63 of a-z 0-9 . -)")
        (self.root / name).mkdir(parents=True, exist_ok=True)

    def start(self, buckets: tuple[str, ...] = (), deadline_s: float = 30.0) -> None:
        exe = binary(self.binary_state or self.home.parent)
        self.root.mkdir(parents=True, exist_ok=True)
        for bucket in buckets:
            self.create_bucket(bucket)
        # the keys go through the environment, not the command line (`ps` shows that)
        env = {
            **os.environ,
            "ROOT_ACCESS_KEY": self.access_key,
            "ROOT_SECRET_KEY": self.secret_key,
        }
        took = self.process.start_until_ready(
            [str(exe), "--port", f"{self.host}:{self.port}", "posix", str(self.root)],
            lambda: is_s3(self.host, self.port),
            deadline_s,
            f"versitygw did not answer on {self.endpoint}",
            env=env,
        )
        (self.home / "port.txt").write_text(str(self.port))
        say(f"s3: versitygw {VERSION} ready on {self.endpoint} in {took:.1f}s")

    def stop(self) -> bool:
        return self.process.stop(grace_s=10.0)
