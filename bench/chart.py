"""The benchmark's chart: throughput bars and latency percentiles side by side."""

from __future__ import annotations

from pathlib import Path

from bench.targets import TARGETS


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
        bars.append(("catch-up to\nPostgreSQL", r["pipeline"]["events_per_s"]))
    if "scaleout" in r:
        bars.append(
            (f"catch-up,\n{r['scaleout']['workers']} workers", r["scaleout"]["events_per_s"])
        )
    for name, v in r.get("mechanisms", {}).get("variants", {}).items():
        bars.append(("variant:\n" + name.replace("-", "\n"), v["events_per_s"]))
    lat, lat10k = r.get("latency"), r.get("latency10k")
    if not bars and not lat and not lat10k:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ax = axes[0]
    if bars:
        labels, values = zip(*bars, strict=True)
        ax.bar(range(len(values)), values, color="#4c78a8")
        ax.set_xticks(range(len(values)), labels, fontsize=7)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ceiling = r.get("ceiling", {}).get("events_per_s_median")
        if ceiling:
            target = TARGETS["ratio"] * ceiling
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
            ax.annotate(f"target ({TARGETS['ratio']:g} x ceiling)", (0, target), fontsize=7)
        ax.set_ylabel("events/s (log scale)")
        for i, v in enumerate(values):
            ax.annotate(f"{v:,.0f}", (i, v), ha="center", va="bottom", fontsize=7)
    ax.set_title("Throughput")
    ax = axes[1]
    series: list[tuple[str, list[float], str]] = []
    points = ["p50", "p95", "p99"]
    targets = []
    if lat:
        rate = f"{lat['achieved_rate']:,} ev/s"
        series.append(
            (
                f"produce -> enriched, {rate}",
                [lat["produce_to_enriched_ms"][p] or 0 for p in points],
                "#f58518",
            )
        )
        series.append(
            (
                f"event -> PostgreSQL row, {rate}",
                [lat["postgres_freshness_ms"].get(p) or 0 for p in points],
                "#54a24b",
            )
        )
        targets += [TARGETS["enriched_p99_ms"], TARGETS["freshness_p99_ms"]]
    if lat10k:
        series.append(
            (
                f"produce -> enriched, {lat10k['achieved_rate']:,} ev/s",
                [lat10k["produce_to_enriched_ms"][p] or 0 for p in points],
                "#e45756",
            )
        )
        targets.append(TARGETS["enriched_p99_ms_10k"])
    if series:
        width = 0.8 / len(series)
        for k, (label, values, color) in enumerate(series):
            offset = (k - (len(series) - 1) / 2) * width
            ax.bar(
                [i + offset for i in range(len(points))],
                values,
                width=width,
                label=label,
                color=color,
            )
        ax.set_xticks(list(range(len(points))), points)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        for target in targets:
            ax.axhline(target, color="grey", linestyle="--", linewidth=1)
        ax.set_ylabel("ms (log scale); dashed: p99 targets")
        ax.legend(fontsize=8)
        ax.set_title("Latency, live load")
    fig.suptitle(
        f"python -m bench, {r['machine']['when']}, {r['machine']['cpus']} CPUs", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
