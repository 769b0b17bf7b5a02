"""The stall guard: writes hold still after the process stood still past the session
timeout, until the next assignment (or, without one, twice the timeout)."""

from __future__ import annotations

import asyncio
import time

from app.stateful.stall import StallGuard


def test_a_short_pause_is_no_stall(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    guard = StallGuard(10)
    now[0] += 9.9
    assert guard.alive()


def test_a_long_stall_holds_writes_until_the_next_assignment(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    guard = StallGuard(10)
    now[0] += 10.5
    assert not guard.alive()
    now[0] += 0.1
    assert not guard.alive(), "stays held after the first look"
    guard.reset()
    assert guard.alive() and guard.stalls == 1


def test_settled_returns_on_assignment():
    async def scenario():
        guard = StallGuard(0.05)
        await asyncio.sleep(0.06)
        assert not guard.alive()
        waiting = asyncio.create_task(guard.settled())
        await asyncio.sleep(0.01)
        guard.reset()
        await asyncio.wait_for(waiting, 1)
        assert guard.alive()

    asyncio.run(scenario())


def test_settled_gives_up_after_twice_the_timeout_when_no_rebalance_comes():
    async def scenario():
        guard = StallGuard(0.05)
        await asyncio.sleep(0.06)
        assert not guard.alive()
        started = time.monotonic()
        await guard.settled()
        assert 0.09 <= time.monotonic() - started < 1
        assert guard.alive()

    asyncio.run(scenario())
