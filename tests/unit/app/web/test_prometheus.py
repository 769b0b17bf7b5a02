"""Prometheus text rendering of a `/api/stats` snapshot (no broker needed)."""

from __future__ import annotations

import re

from app.web.prometheus import render

SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?[0-9.e+-]+$")


def snapshot(**overrides) -> dict:
    snap = {
        "worker": {"id": "host:6066", "app_id": "activity-pipeline", "uptime_s": 12.5},
        "totals": {"transactions_committed": 3, "transactions_aborted": 0},
        "latency": {"buckets": [[0.05, 2], [0.1, 5], ["+Inf", 6]], "sum_s": 0.4, "count": 6},
        "event_loop_lag": {"buckets": [[0.01, 9], ["+Inf", 10]], "sum_s": 0.2, "count": 10},
        "dead_letter_reasons": {"invalid_json": 2, 'we"ird\\reason\n': 1},
        "rejected": [{"sink": "postgres", "reason": "22021", "count": 2}],
        "stages": {
            "source": {"alive": True, "loop_errors": 0, "stuck_partitions": []},
            "stateful": {
                "alive": False,
                "loop_errors": 3,
                "stuck_partitions": [{"partition": 1, "offset": 9, "lag": 4, "for_s": 130}],
            },
        },
        "sources": [
            {
                "partition": 0,
                "events": 10,
                "late": 1,
                "stream_time_ms": 1_700_000_000_123,
                "watermark_ms": 1_699_999_880_123,
                "consumer_lag": 4,
            },
            {
                "partition": 1,
                "events": 0,
                "late": 0,
                "stream_time_ms": None,
                "watermark_ms": None,
                "consumer_lag": None,
            },
        ],
        "user_partitions": [
            {
                "partition": 0,
                "merged_watermark_ms": 1_699_999_880_000,
                "open_sessions": 7,
                "late_at_merge": 0,
                "consumer_lag": 0,
            }
        ],
        "sink": {
            "rows_written": 100,
            "errors": 1,
            "last_write_latency_s": 0.0125,
            "pending_rows": 0,
        },
        "lake": {"rows": 10, "errors": 0, "buffered_rows": 2},
        "sinks": {
            "kafka": {"ok": True, "rows_written": 40, "writes": 3, "errors": 0, "pending_rows": 5},
            "lake": {
                "ok": False,
                "rows_written": 10,
                "writes": 1,
                "errors": 2,
                "pending_rows": 2,
                "failing_since_s": 1_700_000_000.5,
            },
        },
    }
    snap.update(overrides)
    return snap


def test_every_sample_line_is_valid_and_typed() -> None:
    text = render(snapshot())
    assert text.endswith("\n")
    typed = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
        elif not line.startswith("# "):
            assert SAMPLE.match(line), line
            series = line.split("{")[0].split(" ")[0]
            family = re.sub(r"_(bucket|sum|count)$", "", series)
            assert series in typed or family in typed, line


def test_counters_and_gauges() -> None:
    text = render(snapshot())
    assert "# TYPE pipeline_events_processed_total counter" in text
    assert 'pipeline_events_processed_total{partition="0"} 10.0' in text
    assert 'pipeline_late_events_total{partition="0"} 1.0' in text
    assert 'pipeline_dead_letters_total{reason="invalid_json"} 2.0' in text
    assert 'pipeline_source_watermark_timestamp_seconds{partition="0"} 1.699999880123e+09' in text
    assert 'pipeline_consumer_lag_records{partition="0",stage="source"} 4.0' in text
    assert 'pipeline_open_sessions{partition="0"} 7.0' in text
    assert 'pipeline_transactions_committed_total{stage="source"} 3.0' in text
    assert "# TYPE pipeline_end_to_end_latency_seconds histogram" in text
    assert 'pipeline_end_to_end_latency_seconds_bucket{le="0.1"} 5.0' in text
    assert 'pipeline_end_to_end_latency_seconds_bucket{le="+Inf"} 6.0' in text
    assert "pipeline_end_to_end_latency_seconds_count 6.0" in text
    assert 'pipeline_event_loop_lag_seconds_bucket{le="0.01"} 9.0' in text
    assert 'pipeline_rows_rejected_total{reason="22021",sink="postgres"} 2.0' in text
    assert 'pipeline_stage_up{stage="stateful"} 0.0' in text
    assert 'pipeline_stage_loop_errors_total{stage="stateful"} 3.0' in text
    assert 'pipeline_partition_stuck{partition="1",stage="stateful"} 1.0' in text


def test_one_prefix_prometheus_names_and_process_metrics() -> None:
    """Every family is the pipeline's (prefixed) or prometheus_client's process_*;
    counters end in _total, no family twice, no epoch time without _timestamp_seconds."""
    text = render(snapshot())
    typed = [line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE ")]
    names = [name for name, _ in typed]
    assert len(names) == len(set(names)), "a family twice"
    for name, kind in typed:
        assert name.startswith(("pipeline_", "process_")), name
        if kind == "counter":
            assert name.endswith("_total"), name
        assert (
            not re.search(r"(time|since|watermark)_seconds$", name)
            or name.endswith("_timestamp_seconds")
            or name == "process_start_time_seconds"
        ), name
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert name in names, name
    assert "pipeline_sink_up" in names and not any(n.startswith("pipeline_lake_") for n in names)


def test_every_sink_has_the_same_series_labelled_by_name() -> None:
    text = render(snapshot())
    assert 'pipeline_sink_up{sink="kafka"} 1.0' in text
    assert 'pipeline_sink_up{sink="lake"} 0.0' in text
    assert 'pipeline_sink_rows_written_total{sink="kafka"} 40.0' in text
    assert 'pipeline_sink_writes_total{sink="lake"} 1.0' in text
    assert 'pipeline_sink_errors_total{sink="lake"} 2.0' in text
    assert 'pipeline_sink_pending_rows{sink="kafka"} 5.0' in text
    assert 'pipeline_sink_failing_since_timestamp_seconds{sink="lake"} 1.7000000005e+09' in text
    assert 'pipeline_sink_failing_since_timestamp_seconds{sink="kafka"}' not in text  # healthy


def test_unknown_values_are_left_out_and_labels_escaped() -> None:
    text = render(snapshot())
    assert 'pipeline_source_watermark_timestamp_seconds{partition="1"}' not in text
    assert 'pipeline_consumer_lag_records{partition="1",stage="source"}' not in text
    assert 'pipeline_dead_letters_total{reason="we\\"ird\\\\reason\\n"} 1.0' in text


def test_dependencies_say_which_is_away_and_what_was_left_out_of_the_log() -> None:
    from app.outages import Outages

    outages = Outages()
    outages.register("kafka", "127.0.0.1:9092")
    outages.register("postgres", "postgresql://u:***@h/db")
    outages.failed("kafka", "KafkaConnectionError")
    assert outages.suppress("kafka") and not outages.suppress("postgres")
    text = render(snapshot(dependencies=outages.snapshot()))
    assert 'pipeline_dependency_up{dependency="kafka"} 0.0' in text
    assert 'pipeline_dependency_up{dependency="postgres"} 1.0' in text
    assert 'pipeline_dependency_outages_total{dependency="kafka"} 1.0' in text
    assert 'pipeline_dependency_log_lines_left_out_total{dependency="kafka"} 1.0' in text
