"""What `make up` says once everything runs: where to look, then one live line.

The live line reads the worker's `/api/stats` (docs/web.md) every few seconds:
events read (late ones among them), dead letters, rows made durable in PostgreSQL and
the lake, records the worker has yet to read (lag in both stages).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from app.settings import mask_url

EVERY_S = 2.0
DEFAULT_BROKERS = ("localhost:9092", "127.0.0.1:9092")
# not on a terminal (a log, CI): a plain line this often instead of one rewritten line
PLAIN_EVERY_S = 30.0


def get_json(url: str, timeout: float = 3.0) -> tuple[int, dict | None]:
    """(HTTP status, parsed body); (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, None
    except (OSError, ValueError):
        return 0, None


def guide(web: str, bootstrap: str, database_url: str, logs: Path, root: Path) -> str:
    """The block printed once the worker is ready: URLs, then commands to try."""

    # the readers default to localhost:9092, where devstack's Kafka usually is
    flag = "" if bootstrap in DEFAULT_BROKERS else f" --bootstrap-servers {bootstrap}"

    def rel(path: Path) -> str:
        try:
            return str(path.relative_to(root))
        except ValueError:
            return str(path)

    return "\n".join(
        [
            "",
            "Running. Open:",
            f"  dashboard     {web}/",
            f"  metrics       {web}/metrics   (probes: {web}/livez, {web}/readyz)",
            f"  Kafka         {bootstrap}",
            f"  PostgreSQL    {mask_url(database_url)}",
            f"  logs          worker {rel(logs / 'worker.log')}, "
            f"producer {rel(logs / 'producer.log')}",
            "Try, in another terminal (README, See it work):",
            "  make psql SQL='SELECT * FROM active_users ORDER BY window_start DESC LIMIT 5'",
            f"  .venv/bin/python -m app.tail enriched_activity{flag}",
            f"  .venv/bin/python -m app.tail user_activity_dlq{flag}",
            f"  grep -m 3 LATE {rel(logs / 'producer.log')}",
            "Ctrl-C stops the worker and the producer (`make down` stops Kafka and PostgreSQL).",
            "",
        ]
    )


def summary(stats: dict) -> str:
    """`events 12,345 (late 610) · dead letters 0 · rows pg 4,321 lake 12,000 · lag 35`."""
    totals = stats.get("totals", {})
    sinks = stats.get("sinks", {})
    lags = [s.get("consumer_lag") for s in stats.get("sources", [])]
    lags += [u.get("consumer_lag") for u in stats.get("user_partitions", [])]
    lag = sum(x for x in lags if x is not None)

    def rows(name: str) -> str:
        return f"{sinks.get(name, {}).get('rows_written', 0):,}"

    return (
        f"events {totals.get('events', 0):,} (late {totals.get('late', 0):,})"
        f" · dead letters {totals.get('dead_letters', 0):,}"
        f" · rows postgres {rows('postgres')} lake {rows('lake')}"
        f" · lag {lag:,}"
    )


def watch(web: str, stopped, out=sys.stdout) -> None:
    """The live line until Ctrl-C (KeyboardInterrupt) or `stopped()` names an app."""
    tty = out.isatty()
    last_plain = 0.0
    while True:
        time.sleep(EVERY_S)
        gone = stopped()
        if gone:
            if tty:
                out.write("\n")
            raise SystemExit(gone)
        status, stats = get_json(f"{web}/api/stats")
        text = summary(stats) if status == 200 and stats else "worker: no answer from /api/stats"
        stamp = time.strftime("%H:%M:%S")
        if tty:
            out.write(f"\r\033[K{stamp}  {text}")
            out.flush()
        elif time.monotonic() - last_plain >= PLAIN_EVERY_S:
            last_plain = time.monotonic()
            print(f"{stamp}  {text}", file=out, flush=True)
