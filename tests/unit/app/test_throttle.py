"""Backoff and log throttling."""

import time

from app.throttle import Backoff, LogThrottle


def test_backoff_doubles_up_to_its_cap_and_resets():
    b = Backoff(0.5, 3)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3, 3]
    b.reset()
    assert b.next() == 0.5


def test_log_throttle_allows_once_per_interval_per_key(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    t = LogThrottle(60)
    assert t.allow("a") and not t.allow("a") and t.allow("b")
    now[0] += 60
    assert t.allow("a")
