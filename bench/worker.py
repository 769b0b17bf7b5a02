"""One worker process under measurement: start, watch its commits and memory, kill."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench import kafka

ROOT = Path(__file__).resolve().parent.parent


class WorkerDied(RuntimeError):
    pass


class Worker:
    """`faust -A app worker` (or a bench variant of it) with its own app id, lake and state.

    `rss_peak_mb` reads the kernel's high-water mark (VmHWM) of the worker process, so no
    sampling can miss a peak.
    """

    def __init__(self, work: Path, env: dict[str, str], variant: str | None = None) -> None:
        self.work = work
        self.env = env
        self.variant = variant
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._log = None

    @property
    def log_path(self) -> Path:
        return self.work / "worker.log"

    def start(self) -> Worker:
        entry = ["-m", "faust"] if self.variant is None else ["-m", "bench.variant", self.variant]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, *entry, "-A", "app", "worker", "-l", "warn"],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise WorkerDied(f"the worker exited; see {self.log_path}")

    def rss_peak_mb(self) -> float | None:
        return self._status_mb("VmHWM:")

    def rss_mb(self) -> float | None:
        return self._status_mb("VmRSS:")

    def _status_mb(self, field: str) -> float | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return None

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def wait_committed(
        self, bootstrap: str, topic: str, ends: dict, label: str, timeout_s: float = 3600
    ) -> dict:
        """Poll the group's commits until every partition reaches `ends`.

        Returns wall times (monotonic) of the first commit seen and of completion, and the
        count committed at the first sighting (so a rate can exclude the start-up).
        """
        group = self.env["APP_ID"]
        total = sum(ends.values())
        first_at = first_count = None
        last_print = 0.0
        deadline = time.monotonic() + timeout_s
        while True:
            await asyncio.sleep(0.5)
            self.check_alive()
            done = await kafka.committed(bootstrap, group, topic)
            count = sum(min(done.get(tp, 0), end) for tp, end in ends.items())
            now = time.monotonic()
            if count and first_at is None:
                first_at, first_count = now, count
            if now - last_print >= 5:
                last_print = now
                print(f"  {label}: committed {count:,}/{total:,}", file=sys.stderr, flush=True)
            if all(done.get(tp, -1) >= end for tp, end in ends.items()):
                return {"first_at": first_at, "first_count": first_count, "done_at": now}
            if now > deadline:
                raise TimeoutError(f"{label}: {count}/{total} committed after {timeout_s}s")
