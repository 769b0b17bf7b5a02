"""`python -m bench` end to end at a small size: every section runs and its figures hang
together. Speed itself is not asserted (the benchmark prints figures, tests don't time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.latency import within_2x_of_first
from tests.integration.conftest import ROOT


@pytest.mark.slow
def test_bench_runs_every_section_and_writes_json_table_and_chart(infra, tmp_path):
    out = tmp_path / "small"
    args = ["--events", "6000", "--recovery-events", "1500", "--memory-users", "2000"]
    args += ["--memory-events", "5000", "--latency-rate", "300", "--latency-seconds", "5"]
    args += ["--latency10k-rate", "600", "--latency10k-seconds", "4", "--lake-events", "5000"]
    args += ["--mechanism-events", "3000", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.with_suffix(".json").read_text())
    assert "soak" not in r and "profile" not in r  # neither is a default section

    assert r["backlog"]["events"] == 6000 and r["backlog"]["malformed"] > 0
    assert r["ceiling"]["events_per_s_median"] > 0
    assert r["pipeline"]["events_per_s"] > 0
    assert r["pipeline"]["dead_letters"] == r["backlog"]["malformed"]
    assert 0 < r["ratio_pipeline_to_ceiling"] < 1
    assert r["pipeline"]["rss_peak_mb"] > 50
    assert r["pipeline"]["worker_cpu_pct_of_core"] > 0

    scale = r["scaleout"]  # two workers of one app: PostgreSQL holds the backlog once
    assert (
        scale["workers"] == 2
        and scale["page_views_in_postgres"] == r["pipeline"]["page_views_in_postgres"]
    )
    assert scale["events_per_s"] > 0 and scale["workers_cpu_pct_of_core"] > 0
    # the same with the lake on devstack's S3 server: one worker, then two
    for key, workers in (("one_worker", 1), ("workers", 2)):
        on_s3 = scale["s3"][key]
        assert on_s3["workers"] == workers and on_s3["events_per_s"] > 0
        assert on_s3["page_views_in_postgres"] == r["pipeline"]["page_views_in_postgres"]

    assert r["recovery"]["first_commit_after_restart_s"] > 0
    assert (
        r["recovery"]["fresh_events_committed_after_s"]
        >= r["recovery"]["first_commit_after_restart_s"]
    )

    assert r["memory"]["distinct_users"] > 1000

    for name, least in (("latency", 1000), ("latency10k", 1500)):
        lat = r[name]
        assert lat["enriched_seen"] == lat["sent"] > least  # every probe event came out
        assert lat["page_views_in_postgres"] == lat["page_views_sent"] > 0
        assert 0 < lat["produce_to_enriched_ms"]["p50"] <= lat["produce_to_enriched_ms"]["p99"]
        assert len(lat["produce_to_enriched_p50_ms_by_tenth"]) == 10
        within = lat["tenths_within_2x_of_first"]
        assert within == within_2x_of_first(lat["produce_to_enriched_p50_ms_by_tenth"])
        assert lat["stalled"] is (None if within is None else not all(within))
        assert 0 < lat["worker_cpu_pct_of_core"] < 100 * (os.cpu_count() or 1)

    lake = r["lake"]
    assert lake["events"] == 5000 and lake["write_us_per_event"] > 0
    assert lake["files_per_day_before"] and lake["files_per_day_after"]
    assert lake["duckdb_day_ms_compacted"] > 0

    variants = r["mechanisms"]["variants"]
    assert set(variants) == {"as-shipped", "no-lake", "commit-every-1s"}
    assert len(variants["as-shipped"]["runs"]) == 2
    producer = r["mechanisms"]["producer"]
    assert producer["transactional, commit per batch"]["records_per_s"] > 0

    table = out.with_suffix(".md").read_text()
    assert "| catch-up until PostgreSQL holds the backlog (6,000 events, every sink on) |" in table
    assert "| lake: pipeline with / without the lake |" in table
    assert "| catch-up with 2 workers of one app on this machine |" in table
    assert "|   2 workers | " in table and "folder lake: " in table
    rows = table.split("\n\n")[1].splitlines()[2:]
    for line in rows:  # every row with a target says whether it is met
        cells = [c.strip() for c in line.strip("|").split("|")]
        judged = cells[2] != "-" and not cells[0].startswith("peak RSS")  # only near 100k
        assert cells[3] in (("yes", "no") if judged else ("-",)), line
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert table.strip() in done.stdout  # the figures are printed too


@pytest.mark.slow
def test_bench_soak_and_profile(infra, tmp_path):
    """The options outside the default sections: a short soak, py-spy on the catch-up."""
    out = tmp_path / "soak"
    args = ["--only", "pipeline", "--events", "20000", "--profile", "--profile-top", "5"]
    args += ["--soak-minutes", "0.4", "--soak-rate", "300", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.with_suffix(".json").read_text())

    soak = r["soak"]
    assert soak["sent"] > 0 and len(soak["samples"]) >= 2
    assert soak["rss_mb"]["max"] >= soak["rss_mb"]["first"] > 50
    for lag in ("source_lag", "merge_lag"):  # each figure is its samples' own
        values = [sample[lag] for sample in soak["samples"]]
        assert soak[lag] == {"first": values[0], "last": values[-1], "max": max(values)}

    assert r["pipeline"]["profiled"] is True
    profile = r["profile"]
    assert profile["samples"] > 0 and 0 < len(profile["own"]) <= 5
    assert (tmp_path / "soak-profile.txt").read_text().strip()
    table = out.with_suffix(".md").read_text()
    assert "soak (300 ev/s for 0.4 min): RSS first / last / max" in table
    assert "| function (own time) | share |" in table
