"""Outage lines: one when a dependency goes away, a reminder a minute, one when it is
back; library lines about it counted, not written; repeats of a line at most once a
minute."""

from __future__ import annotations

import logging

import pytest

from app import outages
from app.outages import THROTTLED, LogGovernor, Outages


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(outages.time, "monotonic", clock)
    monkeypatch.setattr(outages.time, "time", lambda: clock.now + 1_800_000_000)
    return clock


@pytest.fixture
def written() -> list[str]:
    """What reaches the log, through a handler with the governor installed."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.INFO)
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def test_a_broker_away_for_five_minutes_writes_a_handful_of_lines(clock, written):
    watch = Outages()
    watch.register("kafka", "127.0.0.1:9092", held=lambda: "120 records in open transactions")
    governor = LogGovernor(watch)
    for handler in logging.getLogger().handlers:
        handler.addFilter(governor)
    client = logging.getLogger("aiokafka.client")
    try:
        for second in range(300):  # aiokafka's rate: many lines a second
            for _ in range(50):
                client.error("Unable connect to node with id %s: %s", 1, "[Errno 111] refused")
                logging.getLogger("aiokafka.consumer.fetcher").warning("Failed fetch messages")
            if second % 10 == 0:
                watch.failed("kafka", "KafkaConnectionError: refused")
            clock.now += 1
        watch.ok("kafka")
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(governor)
    assert len(written) <= 1 + 5 + 1, written
    assert "kafka (127.0.0.1:9092) cannot be reached since" in written[0]
    assert "holding back 120 records in open transactions" in written[0]
    assert all("still cannot be reached after" in line for line in written[1:-1])
    assert written[-1].startswith("kafka (127.0.0.1:9092) is back after 5m00s")
    assert "30000 library log lines left out" in written[-1]
    state = watch.snapshot()["kafka"]
    assert state["up"] and state["outages"] == 1 and state["log_lines_left_out"] == 30_000


def test_the_same_warning_is_written_once_a_minute_with_a_count(clock, written):
    """A library's template is one line a minute whatever its arguments; the project's
    own lines are held back only when the whole message repeats (issue 30)."""
    governor = LogGovernor(Outages())
    for handler in logging.getLogger().handlers:
        handler.addFilter(governor)
    mine = logging.getLogger("app.source.service")
    library = logging.getLogger("faust.transport.consumer")
    try:
        for partition in range(4):
            mine.warning("source: commit of partition %d failed", partition)
            mine.warning("source: commit of partition %d failed", partition)
            library.warning("fetch of partition %d slow", partition)
        mine.info("source: partition %d from offset %d", 0, 10)  # info is never held back
        clock.now += 61
        mine.warning("source: commit of partition %d failed", 0)
        library.warning("fetch of partition %d slow", 2)
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(governor)
    assert written == [
        "source: commit of partition 0 failed",
        "fetch of partition 0 slow",
        "source: commit of partition 1 failed",
        "source: commit of partition 2 failed",
        "source: commit of partition 3 failed",
        "source: partition 0 from offset 10",
        "source: commit of partition 0 failed (and 1 more like it in the last minute)",
        "fetch of partition 2 slow (and 3 more like it in the last minute)",
    ]
    assert governor.left_out == 7


def test_a_line_its_writer_throttles_per_reason_is_not_held_back_for_its_template(clock, written):
    """The dead-letter line is limited at its source to once a minute per reason: a
    second reason in the same minute must be written, not taken for a repeat."""
    governor = LogGovernor(Outages())
    for handler in logging.getLogger().handlers:
        handler.addFilter(governor)
    mine = logging.getLogger("app.source.outputs")
    try:
        for reason in ("user_id_too_long", "too_large"):
            mine.warning("source: dead-lettered: %s", reason, extra=THROTTLED)
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(governor)
    assert written == [
        "source: dead-lettered: user_id_too_long",
        "source: dead-lettered: too_large",
    ]
