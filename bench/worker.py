"""One worker process under measurement: start, watch its commits and memory, kill."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import kafka
from devstack.process import Background, stop_together

ROOT = Path(__file__).resolve().parent.parent


class WorkerDied(RuntimeError):
    pass


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 60.0  # after SIGTERM, before SIGKILL


def _stat_ticks(pid: int) -> int | None:
    """utime + stime + cutime + cstime of `pid`, in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may hold spaces: split after it
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields 14-17 of proc(5) (utime, stime, cutime, cstime); fields[0] is field 3
    return sum(int(f) for f in fields[11:15])


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def process_cpu_seconds(pid: int) -> float | None:
    """CPU seconds used by `pid` and every live descendant (None once `pid` is gone)."""
    own = _stat_ticks(pid)
    if own is None:
        return None
    ticks, todo = own, _children(pid)
    while todo:
        child = todo.pop()
        ticks += _stat_ticks(child) or 0
        todo += _children(child)
    return ticks / CLOCK_TICKS


class Worker:
    """`faust -A app worker` (or a bench variant of it) with its own app id, lake and state.

    `rss_peak_mb` reads the kernel's high-water mark (VmHWM) of the worker process, so no
    sampling can miss a peak.
    """

    def __init__(
        self,
        work: Path,
        env: dict[str, str],
        variant: str | None = None,
        wrap: list[str] | None = None,
    ) -> None:
        self.work = work
        self.env = env
        self.variant = variant
        self.wrap = wrap or []  # python arguments before the entry: `-m memray run ...`
        self.process = Background(work / "worker.log")
        self.started = 0.0

    @property
    def log_path(self) -> Path:
        return self.process.log

    def start(self) -> Worker:
        entry = ["-m", "faust"] if self.variant is None else ["-m", "bench.variant", self.variant]
        self.started = time.monotonic()
        self.process.start(
            [sys.executable, *self.wrap, *entry, "-A", "app", "worker", "-l", "warn"],
            env={**os.environ, **self.env},
            cwd=ROOT,
        )
        return self

    def check_alive(self) -> None:
        if not self.process.alive():
            raise WorkerDied(f"the worker exited; see {self.log_path}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the worker process and of its live descendants
        (/proc/<pid>/stat utime + stime, plus cutime + cstime of children it reaped)."""
        if self.process.pid is None:
            return None
        return process_cpu_seconds(self.process.pid)

    def rss_peak_mb(self) -> float | None:
        return self._status_mb("VmHWM:")

    def rss_mb(self) -> float | None:
        return self._status_mb("VmRSS:")

    def _status_mb(self, field: str) -> float | None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return None

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop(grace_s=STOP_GRACE_S)

    @property
    def source_group(self) -> str:
        """The source stage's consumer group."""
        return f"{self.env['APP_ID']}-source"

    @property
    def stateful_group(self) -> str:
        """The stateful stage's consumer group."""
        return f"{self.env['APP_ID']}-stateful"

    async def wait_committed(
        self,
        bootstrap: str,
        topic: str,
        ends: dict,
        label: str,
        timeout_s: float = 3600,
        group: str | None = None,
        on_first: Callable[[], None] | None = None,
    ) -> dict:
        """Poll `group`'s commits (default: the source stage's) until every partition
        reaches `ends`.

        Returns wall times (monotonic) of the first commit seen and of completion, and the
        count committed at the first sighting (so a rate can exclude the start-up);
        `on_first` is called at that first sighting.
        """
        group = group or self.source_group
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
                if on_first is not None:
                    on_first()
            if now - last_print >= 5:
                last_print = now
                print(f"  {label}: committed {count:,}/{total:,}", file=sys.stderr, flush=True)
            if all(done.get(tp, -1) >= end for tp, end in ends.items()):
                return {"first_at": first_at, "first_count": first_count, "done_at": now}
            if now > deadline:
                raise TimeoutError(f"{label}: {count}/{total} committed after {timeout_s}s")


class WorkerGroup:
    """Workers of one app (one consumer group per stage, one lake) on this machine, as
    one for `bench.catch_up`: started together, alive together, their commits the
    group's."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    def start(self) -> WorkerGroup:
        for worker in self.workers:
            worker.start()
        return self

    @property
    def started(self) -> float:
        return min(worker.started for worker in self.workers)

    def check_alive(self) -> None:
        for worker in self.workers:
            worker.check_alive()

    async def wait_committed(self, *args, **kwargs) -> dict:
        return await self.workers[0].wait_committed(*args, **kwargs)  # the group's offsets

    def cpu_seconds(self) -> float | None:
        seconds = [worker.cpu_seconds() for worker in self.workers]
        return None if None in seconds else sum(seconds)

    def rss_peak_mb(self) -> float | None:
        """The largest worker's high-water mark."""
        return max((worker.rss_peak_mb() or 0 for worker in self.workers), default=None)

    def rss_mb(self) -> float | None:
        return max((worker.rss_mb() or 0 for worker in self.workers), default=None)

    def stop(self) -> None:
        """SIGTERM to all at once: one that hangs must not leave the others running
        into the next section."""
        stop_together([worker.process for worker in self.workers], grace_s=STOP_GRACE_S)
