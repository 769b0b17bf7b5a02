"""python -m bench: throughput, latency, CPU, memory, recovery, the lake's costs and the
cost of each mechanism, on the local stack (started or reused by devstack).

`--soak-minutes N` adds a soak (RSS and consumer lag sampled every 10 s at a steady
rate); `--profile` samples the worker with py-spy during the catch-up.

Prints figures and writes them as JSON, a markdown table and a PNG chart. Not a test:
the numbers depend on the machine, and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bench import report
from bench.run import SECTIONS, run
from bench.variant import VARIANTS
from devstack import stack
from devstack.process import say


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--events", type=int, default=500_000, help="backlog size (default 500k)")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--users", type=int, default=10_000, help="distinct users in the backlog")
    p.add_argument("--recovery-events", type=int, default=20_000, help="added after SIGKILL")
    p.add_argument(
        "--scaleout-workers", type=int, default=2, help="workers of the scaleout section"
    )
    p.add_argument(
        "--scaleout-s3",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the scaleout section also catches up with the lake on devstack's S3 server "
        "(one worker, then --scaleout-workers); needs Go to build the server once",
    )
    p.add_argument("--memory-users", type=int, default=100_000)
    p.add_argument("--memory-events", type=int, default=300_000)
    p.add_argument("--latency-rate", type=float, default=2_000, help="events/s")
    p.add_argument("--latency-seconds", type=float, default=60)
    p.add_argument("--latency10k-rate", type=float, default=10_000, help="events/s")
    p.add_argument("--latency10k-seconds", type=float, default=60)
    p.add_argument("--lake-events", type=int, default=200_000, help="bench.lake's backlog")
    p.add_argument("--mechanism-events", type=int, default=100_000)
    p.add_argument("--repeat", type=int, default=1, help="runs of each mechanism variant")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated subset of {','.join(SECTIONS)} (default: all but soak)",
    )
    p.add_argument(
        "--soak-minutes",
        type=float,
        default=0,
        help="add a soak of N minutes (RSS and lag every 10 s); not a default section",
    )
    p.add_argument("--soak-rate", type=float, default=5_000, help="the soak's events/s")
    p.add_argument(
        "--soak-variant",
        choices=sorted(VARIANTS),
        default="as-shipped",
        help="the soak's worker with one part swapped (bench/variant.py), e.g. no-lake",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy records the worker during the pipeline catch-up (<out>-profile.txt)",
    )
    p.add_argument("--profile-top", type=int, default=15, help="functions listed")
    p.add_argument(
        "--memray",
        action="store_true",
        help="the memory section's worker runs under memray (<out>-memray.bin); its peak "
        "RSS then includes memray's own",
    )
    p.add_argument("--keep", action="store_true", help="keep the workers' logs and state")
    p.add_argument("--out", default="bench-results/latest", help="path prefix of .json/.md/.png")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = stack.up()
    result = asyncio.run(run(args, info.bootstrap, info.database_url))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    table = report.markdown(result)
    out.with_suffix(".md").write_text(table)
    chart = report.chart(result, out.with_suffix(".png"))
    print(table)
    say(
        f"written: {out.with_suffix('.json')}, {out.with_suffix('.md')}"
        + (f", {chart}" if chart else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
