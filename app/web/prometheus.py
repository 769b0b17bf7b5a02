"""Prometheus text exposition (format 0.0.4) of one `/api/stats` snapshot. Pure."""

from __future__ import annotations

from collections.abc import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[dict[str, object], float | int | None]


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            series = f"{name}{{{label_text}}}" if label_text else name
            self.lines.append(f"{series} {_number(value)}")

    def histogram(self, name: str, help_text: str, snap: dict) -> None:
        """`snap`: {"buckets": [[upper bound, cumulative count], ...], "sum_s", "count"}."""
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} histogram")
        for bound, count in snap["buckets"]:
            le = bound if isinstance(bound, str) else _number(float(bound))
            self.lines.append(f'{name}_bucket{{le="{le}"}} {count}')
        self.lines.append(f"{name}_sum {_number(float(snap['sum_s']))}")
        self.lines.append(f"{name}_count {snap['count']}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def render(snap: dict) -> str:
    out = Exposition()
    worker = snap["worker"]
    sources = snap["sources"]
    users = snap["user_partitions"]
    sink = snap["sink"]
    lake = snap["lake"]

    def by_source(key: str) -> list[Sample]:
        return [({"partition": s["partition"]}, s[key]) for s in sources]

    def by_user_partition(key: str) -> list[Sample]:
        return [({"partition": u["partition"]}, u[key]) for u in users]

    out.add(
        "worker_info",
        "gauge",
        "This worker (the metrics below cover only its partitions).",
        [({"worker": worker["id"], "app_id": worker["app_id"]}, 1)],
    )
    out.add("worker_uptime_seconds", "gauge", "Seconds since start.", [({}, worker["uptime_s"])])
    out.add(
        "events_processed_total",
        "counter",
        "Valid input events read, late ones included, per source partition.",
        by_source("events"),
    )
    out.add(
        "late_events_total",
        "counter",
        "Events older than their source partition's watermark when read.",
        by_source("late"),
    )
    out.add(
        "dead_letters_total",
        "counter",
        "Bad input records sent to the dead-letter topic, by reason.",
        [({"reason": r}, n) for r, n in snap["dead_letter_reasons"].items()],
    )
    out.add(
        "pipeline_rows_rejected_total",
        "counter",
        "Rows or records a sink refused as data (never writable) and set aside, by sink "
        "and reason (PostgreSQL: SQLSTATE; the rows are in rejected_rows).",
        [({"sink": r["sink"], "reason": r["reason"]}, r["count"]) for r in snap["rejected"]],
    )
    stages = snap["stages"]
    out.add(
        "pipeline_stage_up",
        "gauge",
        "1 while the stage's supervised loop runs.",
        [({"stage": name}, st["alive"]) for name, st in stages.items()],
    )
    out.add(
        "pipeline_stage_loop_errors_total",
        "counter",
        "Unexpected errors the stage's supervisor caught (each followed by a restart).",
        [({"stage": name}, st["loop_errors"]) for name, st in stages.items()],
    )
    out.add(
        "pipeline_partition_stuck",
        "gauge",
        "1 for a partition with records to process and no progress for STUCK_AFTER, or "
        "assigned and not opened for that long; /api/stats says at which offset.",
        [
            ({"stage": name, "partition": s["partition"]}, 1)
            for name, st in stages.items()
            for s in st["stuck_partitions"] + st.get("not_opened", [])
        ],
    )
    out.add(
        "transactions_committed_total",
        "counter",
        "Kafka transactions committed by the source stage (outputs plus source offsets).",
        [({}, snap["totals"].get("transactions_committed"))],
    )
    out.add(
        "transactions_aborted_total",
        "counter",
        "Kafka transactions aborted and read again from the last committed offset.",
        [({}, snap["totals"].get("transactions_aborted"))],
    )
    latency = snap.get("latency")
    if latency:
        out.histogram(
            "end_to_end_latency_seconds",
            "From an input record's Kafka timestamp to the commit of the transaction that "
            "made its enriched record, dead letter and forward visible.",
            latency,
        )
    loop_lag = snap.get("event_loop_lag")
    if loop_lag:
        out.histogram(
            "event_loop_lag_seconds",
            "How late the worker's event loop woke a 20 ms sleeper: how long one piece "
            "of work held the loop that both stages and their commit timers share.",
            loop_lag,
        )
    out.add(
        "source_stream_time_seconds",
        "gauge",
        "Largest event_time read from the source partition (epoch seconds).",
        [({"partition": s["partition"]}, _seconds(s["stream_time_ms"])) for s in sources],
    )
    out.add(
        "source_watermark_seconds",
        "gauge",
        "Stream time minus LATENESS of the source partition (epoch seconds).",
        [({"partition": s["partition"]}, _seconds(s["watermark_ms"])) for s in sources],
    )
    lag = [
        ({"stage": "source", "partition": s["partition"]}, s["consumer_lag"]) for s in sources
    ] + [({"stage": "user_keyed", "partition": u["partition"]}, u["consumer_lag"]) for u in users]
    out.add("consumer_lag", "gauge", "Highwater minus consumer position, in records.", lag)
    out.add(
        "merged_watermark_seconds",
        "gauge",
        "Watermark of a user-keyed partition, merged over source partitions (epoch seconds).",
        [({"partition": u["partition"]}, _seconds(u["merged_watermark_ms"])) for u in users],
    )
    out.add(
        "open_sessions",
        "gauge",
        "Open sessions held by the user-keyed partition.",
        by_user_partition("open_sessions"),
    )
    out.add(
        "late_at_merge_total",
        "counter",
        "On-time events that reached the user-keyed stage behind its merged watermark.",
        by_user_partition("late_at_merge"),
    )
    out.add(
        "sink_rows_written_total",
        "counter",
        "Rows upserted into PostgreSQL.",
        [({}, sink["rows_written"])],
    )
    out.add(
        "sink_errors_total",
        "counter",
        "Failed PostgreSQL writes (each is retried).",
        [({}, sink["errors"])],
    )
    out.add(
        "sink_up",
        "gauge",
        "1 while PostgreSQL is connected and the last write attempt succeeded, else 0.",
        [({}, sink.get("ok"))],
    )
    out.add(
        "sink_consecutive_errors",
        "gauge",
        "Failed PostgreSQL writes since the last success (0 when healthy).",
        [({}, sink.get("consecutive_errors"))],
    )
    out.add(
        "sink_failing_since_seconds",
        "gauge",
        "Start of the current PostgreSQL outage (epoch seconds); absent when healthy.",
        [({}, sink.get("failing_since_s"))],
    )
    out.add(
        "sink_write_latency_seconds",
        "gauge",
        "Duration of the last successful PostgreSQL batch write.",
        [({}, sink["last_write_latency_s"])],
    )
    out.add(
        "sink_pending_rows",
        "gauge",
        "Rows waiting for the next PostgreSQL write.",
        [({}, sink["pending_rows"])],
    )
    sinks = snap.get("sinks", {})

    def by_sink(field: str) -> list[Sample]:
        return [({"sink": name}, fields.get(field)) for name, fields in sorted(sinks.items())]

    # every sink alike (app/sinks/contract.py); the unlabelled sink_* above are PostgreSQL's
    out.add(
        "pipeline_sink_up",
        "gauge",
        "1 while the sink's last write attempt succeeded (or none failed yet), else 0.",
        by_sink("ok"),
    )
    out.add(
        "pipeline_sink_rows_written_total",
        "counter",
        "Rows (records) made durable in the sink.",
        by_sink("rows_written"),
    )
    out.add(
        "pipeline_sink_writes_total",
        "counter",
        "All-or-nothing writes to the sink: Kafka transactions, lake commits, PostgreSQL "
        "transactions.",
        by_sink("writes"),
    )
    out.add(
        "pipeline_sink_errors_total",
        "counter",
        "Failed write attempts (each is retried).",
        by_sink("errors"),
    )
    out.add(
        "pipeline_sink_pending_rows",
        "gauge",
        "Rows handed to the sink and not durable in it yet.",
        by_sink("pending_rows"),
    )
    out.add(
        "pipeline_sink_failing_since_seconds",
        "gauge",
        "Start of the sink's current outage (epoch seconds); absent when healthy.",
        by_sink("failing_since_s"),
    )
    deps = sorted(snap.get("dependencies", {}).items())

    def by_dependency(field: str) -> list[Sample]:
        return [({"dependency": name}, fields.get(field)) for name, fields in deps]

    out.add(
        "pipeline_dependency_up",
        "gauge",
        "0 while the worker cannot reach the dependency (Kafka, PostgreSQL, the lake).",
        by_dependency("up"),
    )
    out.add(
        "pipeline_dependency_outages_total",
        "counter",
        "Times the dependency went away.",
        by_dependency("outages"),
    )
    out.add(
        "pipeline_dependency_log_lines_left_out_total",
        "counter",
        "Library log lines about the dependency counted, not written, while it was away.",
        by_dependency("log_lines_left_out"),
    )
    out.add("lake_rows_total", "counter", "Rows written to the Parquet lake.", [({}, lake["rows"])])
    out.add("lake_errors_total", "counter", "Failed lake writes (retried).", [({}, lake["errors"])])
    out.add(
        "lake_up",
        "gauge",
        "1 when the last lake write succeeded (or none failed yet), 0 while it is failing.",
        [({}, lake.get("ok"))],
    )
    out.add(
        "lake_buffered_rows",
        "gauge",
        "Rows waiting for the next lake flush.",
        [({}, lake["buffered_rows"])],
    )
    return out.text()
