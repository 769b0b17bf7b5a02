"""`python -m bench` end to end at a small size: every section runs and its figures hang
together. Speed itself is not asserted (the benchmark prints figures, tests don't time)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT


@pytest.mark.slow
def test_bench_runs_every_section_and_writes_json_table_and_chart(infra, tmp_path):
    out = tmp_path / "small"
    args = ["--events", "6000", "--recovery-events", "1500", "--memory-users", "2000"]
    args += ["--memory-events", "5000", "--latency-rate", "300", "--latency-seconds", "5"]
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

    assert r["backlog"]["events"] == 6000 and r["backlog"]["malformed"] > 0
    assert r["ceiling"]["events_per_s_median"] > 0
    assert r["pipeline"]["events_per_s"] > 0
    assert r["pipeline"]["dead_letters"] == r["backlog"]["malformed"]
    assert 0 < r["ratio_pipeline_to_ceiling"] < 1
    assert r["pipeline"]["rss_peak_mb"] > 50

    assert r["recovery"]["first_commit_after_restart_s"] > 0
    assert (
        r["recovery"]["fresh_events_committed_after_s"]
        >= r["recovery"]["first_commit_after_restart_s"]
    )

    assert r["memory"]["distinct_users"] > 1000

    lat = r["latency"]
    assert lat["enriched_seen"] == lat["sent"] > 1000  # every probe event came out
    assert lat["page_views_in_postgres"] == lat["page_views_sent"] > 0
    assert 0 < lat["produce_to_enriched_ms"]["p50"] <= lat["produce_to_enriched_ms"]["p99"]

    variants = r["mechanisms"]["variants"]
    assert set(variants) >= {"as-shipped", "ack-before-durable", "producer-without-idempotence"}
    assert len(variants["as-shipped"]["runs"]) == 2
    producer = r["mechanisms"]["producer"]
    assert producer["transactional, commit per batch"]["records_per_s"] > 0

    table = out.with_suffix(".md").read_text()
    assert "| pipeline, every sink on (6,000 events) |" in table
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
    assert table.strip() in done.stdout  # the figures are printed too
