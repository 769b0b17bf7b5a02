"""The benchmark's table and chart from a result document (no broker)."""

from __future__ import annotations

from bench import report
from bench.latency import percentiles


def result(**overrides) -> dict:
    r = {
        "machine": {"when": "2026-11-26T12:00:00+00:00", "cpus": 2, "python": "3.11.7"},
        "backlog": {"distinct_users": 9_990},
        "ceiling": {"events_per_s_median": 400_000},
        "pipeline": {
            "events": 500_000,
            "events_per_s": 30_000,
            "events_per_s_including_start": 20_000,
            "rss_peak_mb": 210.0,
        },
        "ratio_pipeline_to_ceiling": 0.075,
        "latency": {
            "achieved_rate": 2_000,
            "seconds": 60,
            "produce_to_enriched_ms": {"p50": 20.0, "p95": 40.0, "p99": 60.0},
            "postgres_freshness_ms": {"p50": 300.0, "p95": 600.0, "p99": 900.0},
        },
        "memory": {"distinct_users": 95_000, "rss_peak_mb": 480.0},
    }
    r.update(overrides)
    return r


def row(table: str, starts: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {starts}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_table_says_which_targets_are_met():
    table = report.markdown(result())
    assert row(table, "pipeline, every sink on")[1:] == ["30,000 ev/s", ">= 25,000 ev/s", "yes"]
    assert row(table, "pipeline / ceiling")[3] == "no"
    assert row(table, "produce -> enriched")[1:] == ["20 / 40 / 60 ms", "p99 < 50 ms", "no"]
    assert row(table, "event -> PostgreSQL")[3] == "yes"
    assert row(table, "peak RSS, 95,000 users")[3] == "yes"
    assert row(table, "peak RSS, 9,990 users")[1] == "210 MB"


def test_memory_target_is_judged_only_near_100k_users():
    small = result(memory={"distinct_users": 2_000, "rss_peak_mb": 900.0})
    assert row(report.markdown(small), "peak RSS, 2,000 users")[3] == "-"


def test_sections_left_out_leave_their_rows_out():
    table = report.markdown({"machine": result()["machine"], "memory": result()["memory"]})
    assert "ceiling" not in table and "enriched" not in table
    assert "peak RSS, 95,000 users" in table


def test_chart_is_a_png(tmp_path):
    path = report.chart(result(), tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.chart({"machine": result()["machine"]}, tmp_path / "none.png") is None


def test_percentiles_in_ms():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([0.007]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "max": 7.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}
