"""`--profile`: py-spy samples a worker while it catches up, and the functions it spends
its own time in are the report's answer to "what bounds the worker".

py-spy writes collapsed stacks (`--format raw`: one line per distinct stack, frames
root first separated by `;`, then the sample count); speedscope.app and flamegraph.pl
read that file as it is.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from devstack.process import Background

ROOT = Path(__file__).resolve().parent.parent
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    venv = Path(sys.executable).parent / "py-spy"
    return str(venv) if venv.exists() else shutil.which("py-spy")


class Profiler:
    """`py-spy record --pid N` until stop(); non-blocking, so the worker is not paused
    for each sample (its throughput under the profiler is still a little lower)."""

    def __init__(self, pid: int, path: Path, rate: int = 100) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self.path = path
        self.log = path.with_suffix(".log")
        self.log.unlink(missing_ok=True)  # this recording's lines only
        self.process = Background(self.log)
        command = [exe, "record", "--pid", str(pid), "--format", "raw", "--rate", str(rate)]
        self.process.start([*command, "--nonblocking", "-o", str(path)])

    def stop(self) -> Path | None:
        """Ends the recording (SIGINT, as Ctrl-C); the path of the stacks, None if none."""
        self.process.stop(grace_s=60.0, first=signal.SIGINT)
        return self.path if self.path.exists() and self.path.stat().st_size else None


def _short(file: str) -> str:
    """A source path relative to the repository or to site-packages."""
    if "site-packages/" in file:
        return file.rsplit("site-packages/", 1)[1]
    try:
        return str(Path(file).resolve().relative_to(ROOT))
    except ValueError:
        return file


def _function(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match['func']} ({_short(match['file'])})"


def top_functions(collapsed: str, n: int = 15) -> dict:
    """Own time (samples where the function is the innermost frame) and total time
    (samples with the function anywhere on the stack) from collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        samples += k
        frames = [_function(f) for f in stack.split(";")]
        own[frames[-1]] += k
        by_file[frames[-1].rsplit(" (", 1)[-1].rstrip(")")] += k
        for name in set(frames):
            total[name] += k

    def share(counter: Counter[str]) -> list[dict]:
        return [
            {"function": name, "samples": k, "share": round(k / samples, 4)}
            for name, k in counter.most_common(n)
        ]

    return {
        "samples": samples,
        "own": share(own),
        "total": share(total),
        "own_by_file": [
            {"file": name, "samples": k, "share": round(k / samples, 4)}
            for name, k in by_file.most_common(n)
        ]
        if samples
        else [],
    }
