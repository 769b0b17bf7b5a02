"""SinkHealth: one shape for how every sink's writes are going."""

from __future__ import annotations

from app.sinks.contract import SinkHealth


def test_an_outage_is_counted_until_a_write_goes_through():
    health = SinkHealth("db")
    assert health.ok and health.failing_since is None
    health.failed("OSError: refused")
    health.failed("OSError: refused again")
    assert not health.ok
    assert (health.errors, health.consecutive_errors) == (2, 2)
    started = health.failing_since
    assert started is not None and health.last_error == "OSError: refused again"

    outage = health.succeeded(rows=7, seconds=0.02)
    assert outage is not None and outage >= 0
    assert health.ok and health.failing_since is None and health.consecutive_errors == 0
    assert (health.rows_written, health.writes, health.errors) == (7, 1, 2)
    assert health.last_write_s == 0.02 and health.last_success_at >= started
    assert health.last_error == "OSError: refused again"  # what the last outage was
    assert health.succeeded(rows=1, seconds=0.01) is None  # no outage to end


def test_reachable_again_ends_the_outage_without_counting_a_write():
    health = SinkHealth("db")
    health.failed("OSError: refused")
    assert health.reachable() is not None
    assert health.ok and health.writes == 0 and health.rows_written == 0
