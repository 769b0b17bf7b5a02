"""The lake flusher with a lake that cannot be written: rows are kept, reading is held
back only past its bound, and giving partitions up never waits without end."""

from __future__ import annotations

import asyncio
import time

from app.events import Event
from app.settings import Settings
from app.sinks.lake import LakeFenced, LakePosition
from app.sinks.lake.location import LakeLocation
from app.sinks.lake.rows import SEAL_BYTES
from app.source import lake_flusher
from app.source.lake_flusher import LakeFlusher
from app.source.reader import PartitionReader
from app.stats import Stats
from tables.watermark import NO_TIME, SourceClock

T = 1_800_000_000_000


class BrokenLake:
    def __init__(self) -> None:
        self.attempts = 0

    def commit(self, batches, stream_times) -> None:
        self.attempts += 1
        raise OSError("read-only file system")


def flusher_with_rows(n: int) -> tuple[LakeFlusher, dict, BrokenLake]:
    lake = BrokenLake()
    flusher = LakeFlusher(lake, Settings(lake_flush_rows=10, lake_flush_ms=0), Stats())
    readers = {0: PartitionReader(0, SourceClock(120_000), 0, 0, 0)}
    for offset in range(n):
        event = Event(T, "u", "click", "/a", {})
        flusher.rows.add(0, offset, event, T, False)
    return flusher, readers, lake


def test_rows_are_kept_while_the_lake_fails():
    async def scenario():
        flusher, readers, lake = flusher_with_rows(5)
        flusher.maybe_flush(readers)
        await asyncio.sleep(0.1)
        assert lake.attempts >= 1
        assert flusher.pending_rows() == 5  # taken for the commit, not dropped
        assert flusher.health.last_error == "OSError: read-only file system"
        flusher._task.cancel()

    asyncio.run(scenario())


class StoreAway:
    """A lake on an object store that is away; delta-rs's error quotes a secret."""

    location = LakeLocation("s3://lake/events", {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value"})

    def commit(self, batches, stream_times) -> None:
        raise OSError(
            "Generic S3 error\n  \x1b[31m↳\x1b[0m Error performing PUT "
            "http://127.0.0.1:9000/lake?secret=s3cr3t-value\n   Connection refused"
        )


def test_an_object_store_error_is_one_line_without_the_secret():
    async def scenario():
        settings = Settings(lake_uri="s3://lake/events", lake_flush_rows=10, lake_flush_ms=0)
        flusher = LakeFlusher(StoreAway(), settings, Stats())
        readers = {0: PartitionReader(0, SourceClock(120_000), 0, 0, 0)}
        flusher.rows.add(0, 0, Event(T, "u", "click", "/a", {}), T, False)
        flusher.maybe_flush(readers)
        await asyncio.sleep(0.1)
        assert flusher.health.target == "s3://lake/events"
        assert flusher.health.last_error == (
            "OSError: Generic S3 error ↳ Error performing PUT "
            "http://127.0.0.1:9000/lake?secret=*** Connection refused"
        )
        flusher._task.cancel()

    asyncio.run(scenario())


def test_giving_partitions_up_during_a_lake_outage_returns(monkeypatch):
    """The lake never comes back: release gives up after RELEASE_TIMEOUT_S instead of
    waiting for it (how long it takes is not timed here; the wait_for catches a hang)."""
    monkeypatch.setattr(lake_flusher, "RELEASE_TIMEOUT_S", 0.2)

    async def scenario():
        flusher, readers, _ = flusher_with_rows(5)
        flusher.maybe_flush(readers)
        await asyncio.wait_for(flusher.release({0}, readers), 60)
        flusher._task.cancel()

    asyncio.run(scenario())


class TakenOverLake:
    """A lake another writer has already written partition 0 of, up to offset 9."""

    def __init__(self) -> None:
        self.committed: list[dict] = []

    def commit(self, batches, stream_times) -> None:
        if 0 in batches and batches[0].first_offset <= 9:
            raise LakeFenced({0: 9})
        self.committed.append({p: (b.first_offset, b.last_offset) for p, b in batches.items()})

    def resume(self, partition: int) -> LakePosition:
        return LakePosition(10, T)


def test_rows_buffered_after_a_refused_commit_are_never_committed():
    async def scenario():
        lake = TakenOverLake()
        flusher = LakeFlusher(lake, Settings(lake_flush_rows=10, lake_flush_ms=0), Stats())
        readers = {0: PartitionReader(0, SourceClock(120_000), 0, 0, 0)}
        for offset in range(20):
            flusher.rows.add(0, offset, Event(T, "u", "click", "/a", {}), T, False)
        flusher.maybe_flush(readers)
        await flusher._task  # refused: the table holds 0-9 already
        # read on from the old position before the stage re-positions the partition
        for offset in range(20, 26):
            flusher.rows.add(0, offset, Event(T, "u", "click", "/a", {}), T, False)
        await flusher.release({0}, readers)
        # 20-25 would be accepted by the table, leaving 10-19 out for good
        assert lake.committed == []
        assert flusher.take_moved() == {}  # released: its next owner reads the table

    asyncio.run(scenario())


class SlowLake:
    """Reading a partition's position takes a while, as a table with a long log does."""

    def resume(self, partition: int) -> LakePosition:
        time.sleep(0.3)
        return LakePosition(partition * 10, None)


def test_reading_the_lake_positions_leaves_the_event_loop_running():
    async def scenario():
        flusher = LakeFlusher(SlowLake(), Settings(), Stats())
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        positions = await flusher.positions([0, 1])
        ticker.cancel()
        assert positions == {0: (0, NO_TIME), 1: (10, NO_TIME)}
        assert ticks >= 20, f"the loop ran {ticks} times in 0.6 s"

    asyncio.run(scenario())


def test_the_lake_records_the_clock_of_its_rows_not_of_a_reader_reopened_since():
    """Rows buffered at stream time T + 1 min, then the partition reopened (its reader
    now at its committed clock, T - 10 min) with the buffer kept: the lake commit must
    record T + 1 min beside its last offset, the clock a reader resuming there needs."""
    flusher, readers, _ = flusher_with_rows(3)
    flusher.rows.added(0, 300, T + 60_000)
    readers[0] = PartitionReader(0, SourceClock(120_000, T - 600_000), 0, 0, 0)
    batches, clocks = flusher._take(readers)
    assert clocks == {0: T + 60_000} and len(batches[0]) == 3


def test_reading_waits_past_the_byte_bound_as_well_as_the_row_bound():
    """1 MB records: a few of them reach LAKE_BUFFER_BYTES long before the row bound."""
    flusher = LakeFlusher(
        BrokenLake(), Settings(lake_flush_rows=1_000, lake_buffer_bytes=3 << 20), Stats()
    )
    for offset in range(2):
        flusher.rows.add(0, offset, Event(T, "u", "click", "/a", {"blob": "x"}), T, False)
    flusher.rows.added(0, 2 << 20, T)
    assert not flusher.full()
    flusher.rows.add(0, 2, Event(T, "u", "click", "/a", {"blob": "x"}), T, False)
    flusher.rows.added(0, 1 << 20, T)
    assert flusher.full() and flusher.pending_rows() == 3
    flusher.rows.added(0, SEAL_BYTES, T)
    flusher.rows.seal(0)  # past SEAL_BYTES: sealed although far below SEAL_ROWS rows
    assert flusher.rows.rows() == 3 and flusher.rows.nbytes() < 1 << 20  # Arrow's size
