"""The benchmark's figures as a markdown table and a PNG chart."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

# Targets from the benchmark issue, for the "met" column.
TARGETS = {
    "ratio": 0.5,
    "events_per_s": 25_000,
    "enriched_p99_ms": 50,
    "freshness_p99_ms": 2_000,
    "rss_100k_mb": 500,
}


def machine() -> dict:
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 10:
        return f"{value:.3g}{unit}"
    return f"{round(value):,}{unit}"


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def markdown(r: dict) -> str:
    rows: list[tuple[str, str, str, str]] = []
    ceiling = r.get("ceiling", {}).get("events_per_s_median")
    pipe = r.get("pipeline", {})
    if ceiling:
        rows.append(("raw aiokafka + orjson ceiling", _fmt(ceiling, " ev/s"), "", ""))
    if pipe:
        rate = pipe["events_per_s"]
        rows.append(
            (
                f"pipeline, every sink on ({pipe['events']:,} events)",
                _fmt(rate, " ev/s"),
                f">= {TARGETS['events_per_s']:,} ev/s",
                _met(rate >= TARGETS["events_per_s"]),
            )
        )
        rows.append(
            ("  including start-up", _fmt(pipe["events_per_s_including_start"], " ev/s"), "", "")
        )
    if "ratio_pipeline_to_ceiling" in r:
        ratio = r["ratio_pipeline_to_ceiling"]
        rows.append(
            ("pipeline / ceiling", f"{ratio:.4f}", ">= 0.5", _met(ratio >= TARGETS["ratio"]))
        )
    lat = r.get("latency")
    if lat:
        e, f = lat["produce_to_enriched_ms"], lat["postgres_freshness_ms"]
        rate = f"{lat['achieved_rate']:,} ev/s for {lat['seconds']:.0f} s"
        rows.append(
            (
                f"produce -> enriched p50 / p95 / p99 ({rate})",
                f"{_fmt(e['p50'])} / {_fmt(e['p95'])} / {_fmt(e['p99'])} ms",
                "p99 < 50 ms",
                _met(None if e["p99"] is None else e["p99"] < TARGETS["enriched_p99_ms"]),
            )
        )
        rows.append(
            (
                "event -> PostgreSQL row, p50 / p99",
                f"{_fmt(f['p50'])} / {_fmt(f['p99'])} ms",
                "p99 < 2 s",
                _met(None if f["p99"] is None else f["p99"] < TARGETS["freshness_p99_ms"]),
            )
        )
    if pipe:
        users = r.get("backlog", {}).get("distinct_users")
        rows.append((f"peak RSS, {users:,} users", _fmt(pipe["rss_peak_mb"], " MB"), "", ""))
    mem = r.get("memory")
    if mem:
        rss = mem["rss_peak_mb"]
        rows.append(
            (
                f"peak RSS, {mem['distinct_users']:,} users",
                _fmt(rss, " MB"),
                f"< {TARGETS['rss_100k_mb']} MB at 100k",
                _met(rss < TARGETS["rss_100k_mb"]) if mem["distinct_users"] >= 90_000 else "-",
            )
        )
    rec = r.get("recovery")
    if rec:
        rows.append(
            (
                f"recovery after SIGKILL, state of {rec['state_of_events']:,} events",
                f"first commit {rec['first_commit_after_restart_s']} s, "
                f"{rec['fresh_events_after_kill']:,} fresh events in "
                f"{rec['fresh_events_committed_after_s']} s",
                "",
                "",
            )
        )
    mech = r.get("mechanisms")
    if mech:
        for name, v in mech["variants"].items():
            rows.append(
                (
                    f"mechanism variant: {name}",
                    f"{_fmt(v['events_per_s'], ' ev/s')} (x{v['vs_as_shipped']})",
                    "",
                    "",
                )
            )
        for name, v in mech["producer"].items():
            if isinstance(v, dict):
                extra = f", commit {v['commit_ms_median']} ms" if "commit_ms_median" in v else ""
                rows.append(
                    (f"producer: {name}", f"{_fmt(v['records_per_s'], ' rec/s')}{extra}", "", "")
                )
    lines = [
        f"Benchmark {r['machine']['when']} on {r['machine']['cpus']} CPUs, Python "
        f"{r['machine']['python']}",
        "",
        "| measure | result | target | met |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
    ]
    return "\n".join(lines) + "\n"


def chart(r: dict, path: Path) -> Path | None:
    """Throughput bars and latency percentiles side by side; None without figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")

    bars: list[tuple[str, float]] = []
    if "ceiling" in r:
        bars.append(("raw consume\nceiling", r["ceiling"]["events_per_s_median"]))
    if "pipeline" in r:
        bars.append(("pipeline\n(all sinks)", r["pipeline"]["events_per_s"]))
    for name, v in r.get("mechanisms", {}).get("variants", {}).items():
        bars.append(("variant:\n" + name.replace("-", "\n"), v["events_per_s"]))
    lat = r.get("latency")
    if not bars and not lat:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    if bars:
        labels, values = zip(*bars, strict=True)
        ax.bar(range(len(values)), values, color="#4c78a8")
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.axhline(TARGETS["events_per_s"], color="grey", linestyle="--", linewidth=1)
        ax.annotate("target", (len(values) - 0.5, TARGETS["events_per_s"]), fontsize=7)
        ax.set_ylabel("events/s (log scale)")
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=7)
    ax.set_title("Throughput, one worker")
    ax = axes[1]
    if lat:
        points = ["p50", "p95", "p99"]
        e = [lat["produce_to_enriched_ms"][p] or 0 for p in points]
        f = [lat["postgres_freshness_ms"].get(p) or 0 for p in points]
        x = range(len(points))
        ax.bar([i - 0.2 for i in x], e, width=0.4, label="produce -> enriched", color="#f58518")
        ax.bar([i + 0.2 for i in x], f, width=0.4, label="event -> PostgreSQL row", color="#54a24b")
        ax.set_xticks(list(x), points)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        for target in (TARGETS["enriched_p99_ms"], TARGETS["freshness_p99_ms"]):
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel("ms (log scale); dashed: p99 targets")
        ax.legend(fontsize=8)
        ax.set_title(f"Latency at {lat['achieved_rate']:,} events/s")
    fig.suptitle(
        f"python -m bench, {r['machine']['when']}, {r['machine']['cpus']} CPUs", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
