"""Dependencies that go away (Kafka, PostgreSQL, the lake's folder), said plainly and
briefly in the log.

One line when a dependency goes away (what, since when, what is held back), at most
one reminder a minute while it stays away, one line when it is back (after how
long). Meanwhile the libraries' own lines about it (aiokafka logs every failed
connection attempt, thousands a minute) are counted, not written; `/api/stats` and
`/metrics` show the counts. Outside outages, a line of the same template from the
same logger is written at most once a minute, with how many like it were left out;
for the project's own loggers, the same message (template and arguments).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

log = logging.getLogger(__name__)
REMIND_S = 60.0
# loggers whose warnings and errors are about a dependency
LIBRARY_LOGGERS = {"aiokafka": "kafka", "asyncpg": "postgres"}
# the project's own packages (pyproject.toml): their lines are limited by whole message
PROJECT_LOGGERS = frozenset({"app", "agents", "tables", "producer", "devstack", "bench"})


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


@dataclass
class Dependency:
    name: str
    target: str  # where it is, secrets masked
    held: Callable[[], str] | None = None  # what waits for it, in words
    away: str = "cannot be reached"  # how its outage is said
    down_since: float | None = None  # wall clock
    last_error: str | None = None
    failures: int = 0  # failed attempts during the current outage
    suppressed: int = 0  # library log lines left out during the current outage
    outages: int = 0
    suppressed_total: int = 0
    # called with True when it goes away, False when it is back
    listeners: list[Callable[[bool], None]] = field(default_factory=list, repr=False)
    _reminded: float = field(default=0.0, repr=False)  # monotonic


class Outages:
    def __init__(self) -> None:
        self.deps: dict[str, Dependency] = {}

    def register(
        self,
        name: str,
        target: str,
        held: Callable[[], str] | None = None,
        away: str = "cannot be reached",
    ) -> None:
        self.deps[name] = Dependency(name, target, held, away)

    def watch(self, name: str, listener: Callable[[bool], None]) -> None:
        """Call `listener(True)` when `name` goes away and `listener(False)` when it is
        back (say, to retry less often meanwhile)."""
        self.deps[name].listeners.append(listener)

    def down(self, name: str) -> bool:
        dep = self.deps.get(name)
        return dep is not None and dep.down_since is not None

    def failed(self, name: str, error: str) -> None:
        """An attempt to reach `name` failed; the first starts an outage."""
        dep = self.deps.get(name)
        if dep is None:
            return
        dep.last_error = error
        dep.failures += 1
        now = time.monotonic()
        if dep.down_since is None:
            dep.down_since, dep._reminded = time.time(), now
            dep.outages += 1
            since = datetime.fromtimestamp(dep.down_since, UTC).strftime("%H:%M:%S")
            log.warning(
                "%s (%s) %s since %s UTC: %s%s",
                name, dep.target, dep.away, since, error, self._held(dep),
            )  # fmt: skip
            self._tell(dep, True)
        elif now - dep._reminded >= REMIND_S:
            dep._reminded = now
            log.warning(
                "%s (%s) still %s after %s (%d failed attempts, %d library log lines "
                "left out): %s%s",
                name, dep.target, dep.away.removeprefix("still "),
                _duration(time.time() - dep.down_since), dep.failures, dep.suppressed, error,
                self._held(dep),
            )  # fmt: skip

    def ok(self, name: str) -> None:
        """`name` answered; ends its outage, if one is on."""
        dep = self.deps.get(name)
        if dep is None or dep.down_since is None:
            return
        log.warning(
            "%s (%s) is back after %s (%d failed attempts, %d library log lines left out)",
            name, dep.target, _duration(time.time() - dep.down_since), dep.failures,
            dep.suppressed,
        )  # fmt: skip
        dep.down_since, dep.failures, dep.suppressed = None, 0, 0
        self._tell(dep, False)

    @staticmethod
    def _tell(dep: Dependency, away: bool) -> None:
        for listener in dep.listeners:
            try:
                listener(away)
            except Exception:  # a listener's bug must not break the outage bookkeeping
                log.exception("outages: a listener of %s failed", dep.name)

    def suppress(self, name: str) -> bool:
        """A library line about `name`: True (and counted) when it is left out."""
        dep = self.deps.get(name)
        if dep is None or dep.down_since is None:
            return False
        dep.suppressed += 1
        dep.suppressed_total += 1
        return True

    @staticmethod
    def _held(dep: Dependency) -> str:
        if dep.held is None:
            return ""
        try:
            held = dep.held()
        except Exception:  # never let a description break the logging
            return ""
        return f"; holding back {held}" if held else ""

    def snapshot(self) -> dict:
        return {
            name: {
                "target": d.target,
                "up": d.down_since is None,
                "down_since_s": None if d.down_since is None else round(d.down_since, 3),
                "failed_attempts": d.failures,
                "last_error": d.last_error,
                "outages": d.outages,
                "log_lines_left_out": d.suppressed_total,
            }
            for name, d in self.deps.items()
        }


# `extra` of a log line whose writer limits it itself (LogThrottle, once a minute per
# reason): the governor lets it through rather than holding back its other reasons.
THROTTLED = {"throttled": True}


class LogGovernor(logging.Filter):
    """On the root logger's handlers: every line of the process passes through it."""

    def __init__(self, outages: Outages, interval_s: float = 60.0) -> None:
        super().__init__()
        self.outages = outages
        self.interval_s = interval_s
        self._last: dict[tuple[str, object], float] = {}
        self._skipped: dict[tuple[str, object], int] = {}
        self.left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        # one verdict per line, however many handlers it passes
        verdict = getattr(record, "_governed", None)
        if verdict is None:
            verdict = record._governed = self._verdict(record)
        return verdict

    def _verdict(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(__name__):
            return True  # the outage lines themselves
        if record.levelno >= logging.WARNING:
            dependency = LIBRARY_LOGGERS.get(record.name.split(".", 1)[0])
            if dependency is not None:
                if not self.outages.down(dependency) and record.levelno >= logging.ERROR:
                    self.outages.failed(dependency, record.getMessage()[:300])
                if self.outages.suppress(dependency):
                    return False
        if record.levelno < logging.WARNING or getattr(record, "throttled", False):
            return True  # a line its writer already limits (THROTTLED), per reason, say
        # A library's repeated line is one template; the project's own lines with other
        # arguments say other things (another partition, another reason) and pass.
        own = record.name.split(".", 1)[0] in PROJECT_LOGGERS
        key = (record.name, record.getMessage() if own else record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self.interval_s:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            self.left_out += 1
            return False
        self._last[key] = now
        skipped = self._skipped.pop(key, 0)
        if skipped:
            record.msg = f"{record.msg} (and {skipped} more like it in the last minute)"
        if len(self._last) > 10_000:  # templates are few; messages passed as msg are not
            self._last.clear()
        return True

    def install(self) -> LogGovernor:
        root = logging.getLogger()
        for handler in root.handlers:
            if self not in handler.filters:
                handler.addFilter(self)
        return self
