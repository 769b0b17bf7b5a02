"""Memory of the stateful logic alone over a steady stream: does it grow with users or
with events?

Feeds one `PartitionAggregator` (tables/aggregator.py, or another implementation of it
given by path, e.g. an earlier version from git) a live-like stream: `users` users,
`rate` events per second of event time, a batch and a watermark step every 100 ms, as
the stateful stage does at that rate. No broker and no worker around it: what grows here
is the logic's own state. tracemalloc counts the Python memory it holds each event
minute, and names the lines that hold the most at the end.

    python -m bench.state_memory --minutes 20
    git show 1ab3932^:tables/aggregator.py > /tmp/old_aggregator.py
    python -m bench.state_memory --minutes 20 --aggregator /tmp/old_aggregator.py
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import time
import tracemalloc
from pathlib import Path
from types import ModuleType

from tables.sessions import SESSION_END, SESSION_START
from tables.windows import MINUTE_MS

BATCH_MS = 100
LATENESS_MS = 2 * MINUTE_MS  # the watermark trails the newest event time by this much
TIMEOUT_MS = 15 * MINUTE_MS
START_MS = 1_800_000_000_000
# a session starts and ends about every 20 events of its user
EVENT_TYPES = ("page_view",) * 12 + ("click",) * 6 + (SESSION_START, SESSION_END)


def load(path: str | None) -> ModuleType:
    if path is None:
        from tables import aggregator

        return aggregator
    spec = importlib.util.spec_from_file_location("aggregator_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def figures(aggregator: ModuleType, users: int, rate: float, minutes: float, seed: int = 7) -> dict:
    rng = random.Random(seed)
    agg = aggregator.PartitionAggregator(TIMEOUT_MS, sources=1)
    per_batch = max(1, round(rate * BATCH_MS / 1000))
    samples, offset = [], 0
    tracemalloc.start()
    began = time.perf_counter()
    batches = int(minutes * MINUTE_MS / BATCH_MS)
    for b in range(batches):
        now = START_MS + b * BATCH_MS
        for _ in range(per_batch):
            offset += 1
            user = rng.randrange(users)
            kind = EVENT_TYPES[rng.randrange(len(EVENT_TYPES))]
            url = f"/page/{rng.randrange(50)}" if kind == "page_view" else None
            agg.add(0, offset, now - rng.randrange(5_000), f"user_{user:06d}", kind, url)
        agg.mark(0, now - LATENESS_MS, False, 1, 0.0)
        agg.take_changes()
        if (b + 1) % (MINUTE_MS // BATCH_MS) == 0:
            current, _ = tracemalloc.get_traced_memory()
            samples.append(
                {"minute": (b + 1) * BATCH_MS // MINUTE_MS, "mb": round(current / 1e6, 1)}
            )
            print(f"  minute {samples[-1]['minute']:>3}: {samples[-1]['mb']:,.1f} MB", flush=True)
    took = time.perf_counter() - began
    top = tracemalloc.take_snapshot().statistics("lineno")[:5]
    held = _held(agg)
    tracemalloc.stop()
    return {
        "events": offset,
        "users_held": len(agg.users),
        "held": held,
        "samples": samples,
        "seconds": round(took, 1),
        "top": [f"{s.size / 1e6:,.1f} MB in {s.count:,} blocks: {s.traceback}" for s in top],
    }


def _held(agg) -> dict[str, int]:
    """The sizes of what it holds, by attribute: which of them grows with events. Each
    window's counts go by the window's name, the session queue's heaps by theirs (an
    aggregator of an earlier version has neither)."""
    parts = [vars(agg)]
    if hasattr(agg, "session_queue"):
        parts.append(vars(agg.session_queue))
    held = {k: len(v) for p in parts for k, v in p.items() if isinstance(v, list | dict) and v}
    if hasattr(agg, "windows"):
        del held["windows"]
        held.update({name: len(w.counts) for name, w in agg.windows.items()})
    return held


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--aggregator", help="path of another tables/aggregator.py to measure")
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=5_000, help="events per second of event time")
    p.add_argument("--minutes", type=float, default=20, help="minutes of event time")
    args = p.parse_args()
    module = load(args.aggregator)
    print(f"{Path(module.__file__)}: {args.users:,} users, {args.rate:,.0f} events/s")
    result = figures(module, args.users, args.rate, args.minutes)
    print(
        f"{result['events']:,} events in {result['seconds']} s, "
        f"{result['users_held']:,} users held at the end"
    )
    print("entries held at the end: " + ", ".join(f"{k} {n:,}" for k, n in result["held"].items()))
    print("held most at the end:")
    for line in result["top"]:
        print("  " + line)


if __name__ == "__main__":
    main()
