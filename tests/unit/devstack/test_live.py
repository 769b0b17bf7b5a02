"""What `make up` prints once everything runs (devstack/live.py)."""

from __future__ import annotations

import io
from pathlib import Path

from devstack import live


def test_the_guide_names_the_urls_logs_and_commands_without_the_password() -> None:
    root = Path("/repo")
    text = live.guide(
        "http://127.0.0.1:6066",
        "127.0.0.1:9092",
        "postgresql://user:s3cret@127.0.0.1:5432/stream_data",
        root / ".state" / "logs",
        root,
    )
    for shown in (
        "http://127.0.0.1:6066/",
        "http://127.0.0.1:6066/metrics",
        "/readyz",
        "worker .state/logs/worker.log, producer .state/logs/producer.log",
        "make psql SQL=",
        ".venv/bin/python -m app.tail enriched_activity\n",
        "grep -m 3 LATE .state/logs/producer.log",
    ):
        assert shown in text, shown
    assert "s3cret" not in text and "user:***@" in text


def test_a_kafka_elsewhere_is_passed_to_the_readers() -> None:
    text = live.guide("http://h:1", "127.0.0.1:9093", "postgresql://h/db", Path("/l"), Path("/"))
    assert "app.tail enriched_activity --bootstrap-servers 127.0.0.1:9093" in text


def test_the_live_line_sums_both_stages_lag() -> None:
    stats = {
        "totals": {"events": 12345, "late": 610, "dead_letters": 7},
        "sinks": {"postgres": {"rows_written": 4321}, "lake": {"rows_written": 12000}},
        "sources": [{"consumer_lag": 30}, {"consumer_lag": None}],
        "user_partitions": [{"consumer_lag": 5}],
    }
    assert live.summary(stats) == (
        "events 12,345 (late 610) · dead letters 7 · rows postgres 4,321 lake 12,000 · lag 35"
    )


def test_watch_stops_when_an_app_stops(monkeypatch) -> None:
    monkeypatch.setattr(live, "EVERY_S", 0)
    out = io.StringIO()
    try:
        live.watch("http://127.0.0.1:9", lambda: 1, out)
    except SystemExit as exc:
        assert exc.code == 1
    else:
        raise AssertionError("watch did not stop")
