"""The table's throughput rows: the ceiling, the one-worker catch-up, the scale-out
(folder lake and S3), the ratio to the ceiling, the recovery."""

from __future__ import annotations

from bench.table.cells import Row, fmt, met
from bench.targets import REFERENCE_EVENTS_PER_S, TARGETS


def catch_up_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    ceiling = r.get("ceiling", {}).get("events_per_s_median")
    pipe = r.get("pipeline", {})
    if ceiling:
        rows.append(("raw aiokafka + orjson ceiling", fmt(ceiling, " ev/s"), "-", "-"))
    if pipe:
        rate = pipe["events_per_s"]
        profiled = ", under py-spy" if pipe.get("profiled") else ""
        rows.append(
            (
                f"catch-up until PostgreSQL holds the backlog ({pipe['events']:,} events, "
                f"every sink on{profiled})",
                fmt(rate, " ev/s"),
                "-",
                "-",
            )
        )
        if pipe.get("source_stage_events_per_s"):
            rows.append(
                (
                    "  the source stage alone (to its last commit)",
                    fmt(pipe["source_stage_events_per_s"], " ev/s"),
                    "-",
                    "-",
                )
            )
        rows.append(
            (
                f"  vs {REFERENCE_EVENTS_PER_S:,} ev/s",
                f"{rate / REFERENCE_EVENTS_PER_S:.2f} of {REFERENCE_EVENTS_PER_S:,}",
                "-",
                "-",
            )
        )
        rows.append(
            ("  including start-up", fmt(pipe["events_per_s_including_start"], " ev/s"), "-", "-")
        )
        if pipe.get("worker_cpu_pct_of_core") is not None:
            rows.append(
                (
                    "  worker CPU during the catch-up",
                    f"{pipe['worker_cpu_pct_of_core']:.0f}% of one core",
                    "-",
                    "-",
                )
            )
    rows += scaleout_rows(r.get("scaleout"), pipe, ceiling)
    if "ratio_pipeline_to_ceiling" in r:
        ratio = r["ratio_pipeline_to_ceiling"]
        rows.append(
            (
                "catch-up to PostgreSQL complete / ceiling",
                f"{ratio:.4f}",
                f">= {TARGETS['ratio']:g}",
                met(ratio >= TARGETS["ratio"]),
            )
        )
    return rows


def recovery_rows(r: dict) -> list[Row]:
    rows: list[Row] = []
    rec = r.get("recovery")
    if rec:
        rows.append(
            (
                f"recovery after SIGKILL, state of {rec['state_of_events']:,} events",
                f"first commit {rec['first_commit_after_restart_s']} s, "
                f"{rec['fresh_events_after_kill']:,} fresh events in "
                f"{rec['fresh_events_committed_after_s']} s",
                "-",
                "-",
            )
        )
    return rows


def scaleout_rows(scale: dict | None, pipe: dict, ceiling) -> list[Row]:
    if not scale:
        return []
    rate = scale["events_per_s"]
    rows = [
        (
            f"catch-up with {scale['workers']} workers of one app on this machine",
            fmt(rate, " ev/s"),
            "-",
            "-",
        )
    ]
    if pipe:
        rows.append(("  vs one worker", f"{rate / pipe['events_per_s']:.2f}x", "-", "-"))
    if ceiling:
        rows.append(("  / ceiling", f"{rate / ceiling:.4f}", "-", "-"))
    if scale.get("workers_cpu_pct_of_core") is not None:
        rows.append(
            (
                "  the workers' CPU, together",
                f"{scale['workers_cpu_pct_of_core']:.0f}% of one core",
                "-",
                "-",
            )
        )
    return rows + _s3_rows(scale.get("s3"), rate, pipe)


def _s3_rows(s3: dict | None, folder_rate: float, pipe: dict) -> list[Row]:
    """The same catch-ups with the lake on the S3 server, beside the folder lake's."""
    if not s3:
        return []
    one, many = s3["one_worker"]["events_per_s"], s3["workers"]["events_per_s"]
    folder_one = f" (folder lake: {fmt(pipe['events_per_s'], ' ev/s')})" if pipe else ""
    return [
        (
            f"catch-up, lake on S3 ({s3['server']}): one worker",
            fmt(one, " ev/s") + folder_one,
            "-",
            "-",
        ),
        (
            f"  {s3['workers']['workers']} workers",
            f"{fmt(many, ' ev/s')} ({many / one:.2f}x; folder lake: {fmt(folder_rate, ' ev/s')})",
            "-",
            "-",
        ),
    ]
