"""Start, watch and stop the background processes the launcher owns."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


class StackError(Exception):
    """Something the launcher cannot fix by itself; the message says what to do."""


def say(message: str) -> None:
    """Progress for people, on stderr: stdout carries only the export lines."""
    print(message, file=sys.stderr, flush=True)


def require(program: str, install_hint: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise StackError(f"`{program}` is not installed. {install_hint}")
    return path


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid_alive(pid) else None


def spawn(
    argv: list[str],
    log: Path,
    pidfile: Path | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> int:
    """Start `argv` in a session of its own (its process group is stopped as one), its
    output appended to `log`; its pid, also written to `pidfile` when given."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    if pidfile is not None:
        pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def wait_until(check: Callable[[], bool], deadline_s: float, alive: Callable[[], bool]) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if check():
            return True
        if not alive():
            return False
        time.sleep(0.25)
    return check()


def stop_pids(
    pids: list[int], grace_s: float = 20.0, first: signal.Signals = signal.SIGTERM
) -> None:
    """`first` (SIGTERM) to every process group, then SIGKILL to what is left after the
    grace period; signalled together, so that one slow to stop holds up none of the
    others."""
    _signal_until_gone(pids, ((first, grace_s), (signal.SIGKILL, 5.0)))


def kill_pids(pids: list[int], wait_s: float = 30.0) -> None:
    """SIGKILL every process group, as a crash would end it."""
    _signal_until_gone(pids, ((signal.SIGKILL, wait_s),))


def _signal_until_gone(pids: list[int], steps: tuple[tuple[int, float], ...]) -> None:
    for sig, wait_s in steps:
        pids = [pid for pid in pids if _signal_group(pid, sig)]
        end = time.monotonic() + wait_s
        while pids:
            pids = [pid for pid in pids if pid_alive(pid)]
            if not pids or time.monotonic() >= end:
                break
            time.sleep(0.1)
        if not pids:
            return


def _signal_group(pid: int, sig: int) -> bool:
    """False when the process is gone already."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    return True


class Background:
    """One program run in the background: started (`spawn`), watched and stopped.

    With a `pidfile`, a later launcher finds the program again (`running_pid`) and can
    stop it; without one, only this object knows its pid.
    """

    def __init__(self, log: Path, pidfile: Path | None = None) -> None:
        self.log = log
        self.pidfile = pidfile
        self.pid: int | None = None  # the last one started here

    def running_pid(self) -> int | None:
        if self.pidfile is not None:
            return read_pid(self.pidfile)
        return self.pid if self.pid is not None and pid_alive(self.pid) else None

    def start(
        self, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        self.pid = spawn(argv, self.log, self.pidfile, env=env, cwd=cwd)
        return self.pid

    def start_until_ready(
        self,
        argv: list[str],
        ready: Callable[[], bool],
        deadline_s: float,
        not_ready: str,
        env: dict[str, str] | None = None,
        logs: tuple[Path, ...] = (),
    ) -> float:
        """Start, then wait until `ready()`: the seconds it took. A program that exits
        first or is not ready within `deadline_s` is stopped, and StackError says
        `not_ready` with the last lines of `logs` (default: its own log)."""
        started = time.monotonic()
        pid = self.start(argv, env=env)
        if not wait_until(ready, deadline_s, alive=lambda: self.running_pid() == pid):
            stop_pids([pid])
            lines = "\n".join(f"Last lines of {log}:\n{tail(log)}" for log in logs or (self.log,))
            raise StackError(f"{not_ready} within {deadline_s:.0f}s.\n{lines}")
        return time.monotonic() - started

    def alive(self) -> bool:
        return self.pid is not None and self.running_pid() == self.pid

    def stop(self, grace_s: float = 20.0, first: signal.Signals = signal.SIGTERM) -> bool:
        """Stop the program if it runs (see `stop_pids`); whether it ran."""
        return stop_together([self], grace_s, first)

    def kill(self) -> None:
        pid = self.running_pid()
        if pid is not None:
            kill_pids([pid])


def stop_together(
    programs: list[Background], grace_s: float = 20.0, first: signal.Signals = signal.SIGTERM
) -> bool:
    """Stop every program that runs, signalled together; whether any ran."""
    pids = [pid for pid in (program.running_pid() for program in programs) if pid is not None]
    stop_pids(pids, grace_s, first)
    for program in programs:
        if program.pidfile is not None:
            program.pidfile.unlink(missing_ok=True)
    return bool(pids)
