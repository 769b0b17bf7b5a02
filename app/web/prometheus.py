"""`/metrics`: one `/api/stats` snapshot as Prometheus families, by `prometheus_client`.

A custom collector turns the snapshot (the worker's existing counters) into metric
families; `prometheus_client` writes the text and adds its `process_*` families (CPU
seconds, resident memory, open files, start time). Every family of the pipeline's own
starts with `pipeline_`; counters end in `_total`, epoch times in `_timestamp_seconds`.
The list, with labels and meaning: docs/metrics.md (a unit test keeps the two equal).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "pipeline_"


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _value(value) -> float | None:
    if value is None:
        return None
    return float(value)


class _Families:
    """Builds families; a sample whose value is unknown (None) is left out."""

    def __init__(self) -> None:
        self.out: list[Metric] = []

    def _add(self, cls, name: str, help_text: str, samples) -> None:
        samples = list(samples)
        labels = list(samples[0][0]) if samples else []
        family = cls(PREFIX + name, help_text, labels=labels)
        for label_values, value in samples:
            value = _value(value)
            if value is not None:
                family.add_metric([str(v) for v in label_values.values()], value)
        self.out.append(family)

    def gauge(self, name: str, help_text: str, samples) -> None:
        self._add(GaugeMetricFamily, name, help_text, samples)

    def counter(self, name: str, help_text: str, samples) -> None:
        """`name` without `_total`: prometheus_client adds it."""
        self._add(CounterMetricFamily, name, help_text, samples)

    def histogram(self, name: str, help_text: str, snap: dict | None) -> None:
        """`snap`: {"buckets": [[upper bound, cumulative count], ...], "sum_s", "count"}."""
        family = HistogramMetricFamily(PREFIX + name, help_text, labels=[])
        if snap:
            buckets = [
                (bound if isinstance(bound, str) else repr(float(bound)), count)
                for bound, count in snap["buckets"]
            ]
            family.add_metric([], buckets=buckets, sum_value=float(snap["sum_s"]))
        self.out.append(family)


def families(snap: dict) -> list[Metric]:
    """The pipeline's families of one `/api/stats` snapshot (docs/metrics.md)."""
    f = _Families()
    worker, sources, users = snap["worker"], snap["sources"], snap["user_partitions"]

    def by_source(key: str):
        return [({"partition": s["partition"]}, s[key]) for s in sources]

    def by_user_partition(key: str):
        return [({"partition": u["partition"]}, u[key]) for u in users]

    f.gauge(
        "worker_info",
        "This worker (the other pipeline_ families cover only its partitions); always 1.",
        [({"worker": worker["id"], "app_id": worker["app_id"]}, 1)],
    )
    f.counter(
        "events_processed",
        "Valid input events read, late ones included, per source partition.",
        by_source("events"),
    )
    f.counter(
        "late_events",
        "Events older than their source partition's watermark when read.",
        by_source("late"),
    )
    f.counter(
        "dead_letters",
        "Bad input records sent to the dead-letter topic, by reason.",
        [({"reason": r}, n) for r, n in snap["dead_letter_reasons"].items()],
    )
    f.counter(
        "rows_rejected",
        "Rows or records a sink refused as data (never writable) and set aside, by sink "
        "and reason (PostgreSQL: SQLSTATE; the rows are in rejected_rows).",
        [({"sink": r["sink"], "reason": r["reason"]}, r["count"]) for r in snap["rejected"]],
    )
    stages = snap["stages"]
    f.gauge(
        "stage_up",
        "1 while the stage's supervised loop runs.",
        [({"stage": name}, st["alive"]) for name, st in stages.items()],
    )
    f.counter(
        "stage_loop_errors",
        "Unexpected errors the stage's supervisor caught (each followed by a restart).",
        [({"stage": name}, st["loop_errors"]) for name, st in stages.items()],
    )
    f.gauge(
        "partition_stuck",
        "1 for a partition with records to process and no progress for STUCK_AFTER, or "
        "assigned and not opened for that long; /api/stats says at which offset.",
        [
            ({"stage": name, "partition": s["partition"]}, 1)
            for name, st in stages.items()
            for s in st["stuck_partitions"] + st.get("not_opened", [])
        ],
    )
    totals = snap["totals"]
    f.counter(
        "transactions_committed",
        "Kafka transactions committed, by stage (outputs plus input offsets).",
        [
            ({"stage": "source"}, totals.get("transactions_committed")),
            ({"stage": "stateful"}, totals.get("stateful_transactions_committed")),
        ],
    )
    f.counter(
        "transactions_aborted",
        "Kafka transactions aborted and read again from the last committed offset, by stage.",
        [
            ({"stage": "source"}, totals.get("transactions_aborted")),
            ({"stage": "stateful"}, totals.get("stateful_transactions_aborted")),
        ],
    )
    f.histogram(
        "end_to_end_latency_seconds",
        "From an input record's Kafka timestamp to the commit of the transaction that "
        "made its enriched record, dead letter and forward visible.",
        snap.get("latency"),
    )
    f.histogram(
        "event_loop_lag_seconds",
        "How late the worker's event loop woke a 20 ms sleeper: how long one piece "
        "of work held the loop that both stages and their commit timers share.",
        snap.get("event_loop_lag"),
    )
    f.gauge(
        "source_stream_time_timestamp_seconds",
        "Largest event_time read from the source partition (Unix time).",
        [({"partition": s["partition"]}, _seconds(s["stream_time_ms"])) for s in sources],
    )
    f.gauge(
        "source_watermark_timestamp_seconds",
        "Stream time minus LATENESS of the source partition (Unix time).",
        [({"partition": s["partition"]}, _seconds(s["watermark_ms"])) for s in sources],
    )
    f.gauge(
        "consumer_lag_records",
        "Highwater minus consumer position, by stage and partition.",
        [({"stage": "source", "partition": s["partition"]}, s["consumer_lag"]) for s in sources]
        + [({"stage": "stateful", "partition": u["partition"]}, u["consumer_lag"]) for u in users],
    )
    f.gauge(
        "merged_watermark_timestamp_seconds",
        "Watermark of a user-keyed partition, merged over source partitions (Unix time).",
        [({"partition": u["partition"]}, _seconds(u["merged_watermark_ms"])) for u in users],
    )
    f.gauge(
        "open_sessions",
        "Open sessions held by the user-keyed partition.",
        by_user_partition("open_sessions"),
    )
    f.counter(
        "late_at_merge",
        "On-time events that reached the user-keyed stage behind its merged watermark.",
        by_user_partition("late_at_merge"),
    )
    sinks = sorted(snap.get("sinks", {}).items())

    def by_sink(field: str):
        return [({"sink": name}, fields.get(field)) for name, fields in sinks]

    # every sink alike (app/sinks/contract.py): kafka (the outputs), lake, postgres
    f.gauge(
        "sink_up",
        "1 while the sink's last write attempt succeeded (or none failed yet), else 0.",
        by_sink("ok"),
    )
    f.counter(
        "sink_rows_written", "Rows (records) made durable in the sink.", by_sink("rows_written")
    )
    f.counter(
        "sink_writes",
        "All-or-nothing writes to the sink: Kafka transactions, lake commits, PostgreSQL "
        "transactions.",
        by_sink("writes"),
    )
    f.counter("sink_errors", "Failed write attempts (each is retried).", by_sink("errors"))
    f.gauge(
        "sink_consecutive_errors",
        "Failed write attempts since the last success (0 when healthy).",
        by_sink("consecutive_errors"),
    )
    f.gauge(
        "sink_pending_rows",
        "Rows handed to the sink and not durable in it yet.",
        by_sink("pending_rows"),
    )
    f.gauge(
        "sink_last_write_duration_seconds",
        "Duration of the sink's last successful write.",
        by_sink("last_write_s"),
    )
    f.gauge(
        "sink_failing_since_timestamp_seconds",
        "Start of the sink's current outage (Unix time); absent when healthy.",
        by_sink("failing_since_s"),
    )
    deps = sorted(snap.get("dependencies", {}).items())

    def by_dependency(field: str):
        return [({"dependency": name}, fields.get(field)) for name, fields in deps]

    f.gauge(
        "dependency_up",
        "0 while the worker cannot reach the dependency (Kafka, PostgreSQL, the lake).",
        by_dependency("up"),
    )
    f.counter("dependency_outages", "Times the dependency went away.", by_dependency("outages"))
    f.counter(
        "dependency_log_lines_left_out",
        "Library log lines about the dependency counted, not written, while it was away.",
        by_dependency("log_lines_left_out"),
    )
    return f.out


class _Snapshot:
    def __init__(self, snap: dict) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Metric]:
        yield from families(self.snap)


def render(snap: dict) -> str:
    """The exposition text: the snapshot's families, then this process's `process_*`."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(snap))
    ProcessCollector(registry=registry)
    return generate_latest(registry).decode()
