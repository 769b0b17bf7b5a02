"""The benchmark's table and chart from a result document (no broker)."""

from __future__ import annotations

from bench import report
from bench.latency import percentiles, within_2x_of_first


def live(rate: int, p99: float, **extra) -> dict:
    return {
        "achieved_rate": rate,
        "seconds": 60,
        "sent": rate * 60,
        "enriched_seen": rate * 60,
        "produce_to_enriched_ms": {"p50": 20.0, "p95": 40.0, "p99": p99},
        "produce_to_enriched_p50_ms_by_tenth": [20.0] * 9 + [30.0],
        "stalled": False,
        "worker_cpu_pct_of_core": 18.5,
        "postgres_freshness_ms": {"p50": 300.0, "p95": 600.0, "p99": 900.0},
        **extra,
    }


def result(**overrides) -> dict:
    r = {
        "machine": {"when": "2026-11-26T12:00:00+00:00", "cpus": 2, "python": "3.11.7"},
        "backlog": {"distinct_users": 9_990},
        "ceiling": {"events_per_s_median": 400_000},
        "pipeline": {
            "events": 500_000,
            "events_per_s": 130_000,
            "events_per_s_including_start": 20_000,
            "source_stage_events_per_s": 150_000,
            "rss_peak_mb": 210.0,
        },
        "ratio_pipeline_to_ceiling": 0.325,
        "latency": live(2_000, 60.0),
        "latency10k": live(10_000, 160.0, enriched_seen=599_990),
        "memory": {"distinct_users": 95_000, "rss_peak_mb": 280.0},
        "lake": {
            "events": 200_000,
            "commit_rows": 5_000,
            "add_us_per_event": 0.15,
            "write_us_per_event": 6.07,
            "commit_ms_median": 23.0,
            "files_per_day_before": {"2024-10-04": 14, "2024-10-05": 13},
            "files_per_day_after": {"2024-10-04": 1, "2024-10-05": 1},
            "duckdb_day_ms_uncompacted": 11.3,
            "duckdb_day_ms_compacted": 7.96,
            "open_day": {
                "commits": 120,
                "maintain_every_commits": 10,
                "most_files": 21,
                "files_without_compaction": 120,
                "rewritten_bytes_per_byte": 4.82,
            },
        },
        "mechanisms": {
            "variants": {
                "as-shipped": {"events_per_s": 30_000, "runs": [30_000], "vs_as_shipped": 1.0},
                "no-lake": {"events_per_s": 40_000, "runs": [40_000], "vs_as_shipped": 1.333},
                "commit-every-1s": {
                    "events_per_s": 33_000,
                    "runs": [33_000],
                    "vs_as_shipped": 1.1,
                },
            },
            "producer": {"records": 100_000, "acks=1": {"records_per_s": 300_000}},
        },
    }
    r.update(overrides)
    return r


def row(table: str, starts: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(f"| {starts}"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def target_rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [c for c in cells if len(c) == 4 and c[2] not in ("-", "target")]


def test_table_says_which_targets_are_met():
    table = report.markdown(result())
    assert row(table, "catch-up until PostgreSQL holds")[1] == "130,000 ev/s"
    assert row(table, "  the source stage alone")[1] == "150,000 ev/s"
    assert row(table, "  vs 50,000 ev/s")[1] == "2.60 of 50,000"
    assert row(table, "catch-up to PostgreSQL complete / ceiling")[2:] == [">= 0.3", "yes"]
    assert row(table, "2k: produce -> enriched")[1:] == ["20 / 40 / 60 ms", "p99 <= 100 ms", "yes"]
    assert row(table, "2k: every record seen")[1:] == ["120,000 of 120,000", "sent == seen", "yes"]
    assert row(table, "2k: p50 per tenth")[3] == "yes"
    assert row(table, "2k: worker CPU")[1:] == ["18.5% of one core", "<= 20% of one core", "yes"]
    assert row(table, "2k: event -> PostgreSQL")[2:] == ["p99 <= 1 s", "yes"]
    assert row(table, "10k: produce -> enriched")[2:] == ["p99 <= 150 ms", "no"]
    assert row(table, "10k: every record seen")[1:] == ["599,990 of 600,000", "sent == seen", "no"]
    assert row(table, "peak RSS, 95,000 users")[2:] == ["<= 300 MB at 100k", "yes"]
    assert row(table, "peak RSS, 9,990 users")[1] == "210 MB"


def test_every_target_row_says_met_or_not():
    rows = target_rows(report.markdown(result()))
    assert len(rows) == 10
    assert all(r[3] in ("yes", "no") for r in rows), rows


def test_a_stall_and_too_much_cpu_are_not_met():
    slow = live(2_000, 60.0, stalled=True, worker_cpu_pct_of_core=40.0)
    table = report.markdown(result(latency=slow))
    assert row(table, "2k: p50 per tenth")[3] == "no"
    assert row(table, "2k: worker CPU")[3] == "no"


def test_lake_figures_and_the_pipeline_with_and_without_the_lake():
    table = report.markdown(result())
    assert "6.07 us" in row(table, "lake: write cost per event")[1]
    assert row(table, "lake: files per day before / after")[1].startswith("14 / 1")
    assert row(table, "lake: DuckDB")[1] == "11.3 / 7.96 ms"
    assert row(table, "lake: pipeline with / without")[1] == (
        "30,000 ev/s / 40,000 ev/s (lake costs 25%)"
    )
    for name in ("as-shipped", "no-lake", "commit-every-1s"):
        assert row(table, f"mechanism variant: {name}")


def test_soak_and_profile_are_printed_when_present():
    soak = {
        "minutes": 30,
        "rate_events_per_s": 5_000,
        "rss_mb": {"first": 200.0, "last": 210.0, "max": 215.0},
        "rss_growth_after_minute_5": 0.125,
        "rss_mb_median_per_5_min": [190.0, 200.0, 225.0],
        "source_lag": {"first": 400, "last": 380, "max": 900},
        "merge_lag": {"first": 10, "last": 12, "max": 50},
    }
    profile = {
        "samples": 2_000,
        "stacks": "bench-results/latest-profile.txt",
        "own": [{"function": "add (app/sinks/lake/rows.py)", "samples": 300, "share": 0.15}],
        "own_by_file": [{"file": "app/sinks/lake/rows.py", "samples": 300, "share": 0.15}],
    }
    table = report.markdown(result(soak=soak, profile=profile))
    assert row(table, "soak (5,000 ev/s for 30 min): RSS")[1] == "200 / 210 / 215 MB"
    assert row(table, "soak: source stage lag")[1] == "400 / 380 / 900 records"
    assert row(table, "soak: RSS growth from minute 5")[1:] == ["+12.5%", "<= 10%", "no"]
    assert row(table, "soak: RSS median of each 5 minutes")[1] == "190 / 200 / 225 MB"
    assert "| add (app/sinks/lake/rows.py) | 15.0% |" in table
    assert "2,000 samples" in table


def test_memory_target_is_judged_only_near_100k_users():
    small = result(memory={"distinct_users": 2_000, "rss_peak_mb": 900.0})
    assert row(report.markdown(small), "peak RSS, 2,000 users")[3] == "-"


def test_sections_left_out_leave_their_rows_out():
    table = report.markdown({"machine": result()["machine"], "memory": result()["memory"]})
    assert "ceiling" not in table and "enriched" not in table and "lake" not in table
    assert "peak RSS, 95,000 users" in table


def test_chart_is_a_png(tmp_path):
    path = report.chart(result(), tmp_path / "bench.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.chart({"machine": result()["machine"]}, tmp_path / "none.png") is None


def test_a_tenth_more_than_twice_the_first_is_a_stall():
    assert within_2x_of_first([10.0, 20.0, 15.0]) == [True, True, True]
    assert within_2x_of_first([10.0, 20.1, None]) == [True, False, False]
    assert within_2x_of_first([None, 5.0]) is None


def test_percentiles_in_ms():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert percentiles([0.007]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "max": 7.0}
    assert percentiles([]) == {"p50": None, "p95": None, "p99": None, "max": None}


def test_the_scaleout_catch_up_is_shown_against_one_worker_and_the_ceiling():
    scale = {"workers": 2, "events_per_s": 195_000, "workers_cpu_pct_of_core": 180.4}
    table = report.markdown(result(scaleout=scale))
    assert "| catch-up with 2 workers of one app on this machine | 195,000 ev/s | - | - |" in table
    assert "|   vs one worker | 1.50x | - | - |" in table
    assert "|   / ceiling | 0.4875 | - | - |" in table
    assert "|   the workers' CPU, together | 180% of one core | - | - |" in table
    assert "workers" not in report.markdown(result())


def test_the_scaleout_on_s3_is_shown_beside_the_folder_lake():
    s3 = {
        "server": "versitygw v1.8.0 at http://127.0.0.1:9000",
        "one_worker": {"workers": 1, "events_per_s": 100_000},
        "workers": {"workers": 2, "events_per_s": 150_000},
    }
    scale = {"workers": 2, "events_per_s": 195_000, "s3": s3}
    table = report.markdown(result(scaleout=scale))
    assert (
        "| catch-up, lake on S3 (versitygw v1.8.0 at http://127.0.0.1:9000): one worker | "
        "100,000 ev/s (folder lake: 130,000 ev/s) | - | - |" in table
    ), table
    assert "|   2 workers | 150,000 ev/s (1.50x; folder lake: 195,000 ev/s) | - | - |" in table
