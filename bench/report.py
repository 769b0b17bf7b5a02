"""The benchmark's figures as a markdown table and a PNG chart."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime

from bench.chart import chart
from bench.table import costs, live, throughput

__all__ = ["chart", "machine", "markdown"]


def machine() -> dict:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def markdown(r: dict) -> str:
    rows = [
        *throughput.catch_up_rows(r),
        *live.latency_rows(r),
        *costs.memory_rows(r),
        *throughput.recovery_rows(r),
        *costs.changelog_rows(r),
        *costs.lake_rows(r),
        *costs.mechanism_rows(r),
        *live.soak_rows(r),
    ]
    lines = [
        f"Benchmark {r['machine']['when']} on {r['machine']['cpus']} CPUs, Python "
        f"{r['machine']['python']}",
        "",
        "| measure | result | target | met |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    prof = r.get("profile")
    if prof and prof.get("own"):
        lines += [
            "",
            f"Worker's own time during the catch-up (py-spy, {prof['samples']:,} samples; "
            f"stacks: {prof['stacks']})",
            "",
            "| function (own time) | share |",
            "|---|---|",
            *[f"| {f['function']} | {f['share'] * 100:.1f}% |" for f in prof["own"]],
        ]
        if prof.get("own_by_file"):
            lines += [
                "",
                "| file (own time) | share |",
                "|---|---|",
                *[f"| {f['file']} | {f['share'] * 100:.1f}% |" for f in prof["own_by_file"]],
            ]
    return "\n".join(lines) + "\n"
