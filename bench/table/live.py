"""The table's rows of live load: latency at 2k and 10k events/s, and the soak."""

from __future__ import annotations

from bench.table.cells import Row, at_most, fmt, met, spread
from bench.targets import TARGETS


def latency_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    if r.get("latency"):
        rows += _live_rows(r["latency"], "2k", TARGETS["enriched_p99_ms"])
    if r.get("latency10k"):
        rows += _live_rows(r["latency10k"], "10k", TARGETS["enriched_p99_ms_10k"])
    return rows


def soak_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    soak = r.get("soak")
    if soak:
        run = f"{soak['rate_events_per_s']:,.0f} ev/s for {soak['minutes']:g} min"
        rows.append(
            (f"soak ({run}): RSS first / last / max", spread(soak["rss_mb"], " MB"), "-", "-")
        )
        medians = soak.get("rss_mb_median_per_5_min")
        if medians:
            rows.append(
                (
                    "soak: RSS median of each 5 minutes",
                    " / ".join(f"{m:,.0f}" for m in medians) + " MB",
                    "-",
                    "-",
                )
            )
        growth = soak.get("rss_growth_after_minute_5")
        if growth is not None:
            rows.append(
                (
                    "soak: RSS growth from minute 5 (medians of minutes 5-10 and the last 5)",
                    f"{growth * 100:+.1f}%",
                    f"<= {TARGETS['soak_rss_growth'] * 100:g}%",
                    met(growth <= TARGETS["soak_rss_growth"]),
                )
            )
        for key, what in (
            ("source_lag", "source stage lag"),
            ("merge_lag", "stateful stage lag"),
            ("source_commit_lag", "source stage uncommitted"),
            ("merge_commit_lag", "stateful stage uncommitted"),
        ):
            if key not in soak:
                continue
            rows.append(
                (
                    f"soak: {what} first / last / max",
                    spread(soak[key], " records"),
                    "-",
                    "-",
                )
            )
    return rows


def _live_rows(lat: dict, label: str, p99_target: float | None) -> list[Row]:
    """Rows of one live-rate section (latency, latency10k)."""
    rows = []
    e, f = lat["produce_to_enriched_ms"], lat.get("postgres_freshness_ms")
    run = f"{lat['achieved_rate']:,} ev/s for {lat['seconds']:.0f} s"
    rows.append(
        (
            f"{label}: produce -> enriched p50 / p95 / p99 ({run})",
            f"{fmt(e['p50'])} / {fmt(e['p95'])} / {fmt(e['p99'])} ms",
            "-" if p99_target is None else f"p99 <= {p99_target:g} ms",
            "-" if p99_target is None else met(at_most(e["p99"], p99_target)),
        )
    )
    seen_all = lat["enriched_seen"] == lat["sent"]
    rows.append(
        (
            f"{label}: every record seen",
            f"{lat['enriched_seen']:,} of {lat['sent']:,}",
            "sent == seen",
            met(seen_all),
        )
    )
    tenths = lat.get("produce_to_enriched_p50_ms_by_tenth")
    if tenths:
        stalled = lat.get("stalled")
        rows.append(
            (
                f"{label}: p50 per tenth of the run",
                " / ".join(fmt(v) for v in tenths) + " ms",
                "each <= 2x the first (no stall)",
                met(None if stalled is None else not stalled),
            )
        )
    cpu = lat.get("worker_cpu_pct_of_core")
    if "worker_cpu_pct_of_core" in lat:
        target = TARGETS["cpu_pct_of_core"] if label == "2k" else None
        rows.append(
            (
                f"{label}: worker CPU (user + system)",
                "-" if cpu is None else f"{cpu:.1f}% of one core",
                "-" if target is None else f"<= {target}% of one core",
                "-" if target is None else met(at_most(cpu, target)),
            )
        )
    if f:
        target = TARGETS["freshness_p99_ms"] if label == "2k" else None
        rows.append(
            (
                f"{label}: event -> PostgreSQL row, p50 / p99",
                f"{fmt(f['p50'])} / {fmt(f['p99'])} ms",
                "-" if target is None else f"p99 <= {target / 1000:g} s",
                "-" if target is None else met(at_most(f["p99"], target)),
            )
        )
    return rows
