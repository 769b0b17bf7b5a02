"""Feeds the lake table from the source stage's batches, on the lake's own schedule.

Rows are buffered per source partition and committed every LAKE_FLUSH or
LAKE_FLUSH_ROWS, whichever comes first, in a worker thread, one commit at a time;
the Kafka transactions never wait for it. Each lake commit records, per source
partition, the last offset it holds and the source clock there, so exactly once in
the lake needs nothing from Kafka. While the lake cannot be written the rows are
kept and retried; past `max_buffered` rows (twice LAKE_FLUSH_ROWS, the commit under
way included, or LAKE_BUFFER_BYTES) reading waits (nothing is dropped).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time

from app import failpoints
from app.outages import Outages
from app.sinks.contract import SinkHealth
from app.sinks.lake import LakeFenced, LakeRows
from app.stats import Stats
from app.throttle import Backoff
from tables.watermark import NO_TIME

log = logging.getLogger(__name__)
RELEASE_TIMEOUT_S = 10.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class LakeFlusher:
    name = "lake"

    def __init__(self, table, settings, stats: Stats, outages: Outages | None = None) -> None:
        self.table = table  # app.sinks.lake.LakeTable
        self.settings = settings
        self.stats = stats
        self.outages = outages or Outages()
        self.health = SinkHealth(settings.lake.target)
        self.rows = LakeRows()
        # rows wait as Arrow columns until their commit: bounded to keep memory flat
        self.max_buffered = 2 * settings.lake_flush_rows
        self._task: asyncio.Task | None = None
        self._last_flush = time.monotonic()
        self._moved: dict[int, tuple[int, int]] = {}
        # partitions whose buffered rows start where the table does not stand (another
        # writer got there first): dropped until the stage reads them again from there
        self._stale: set[int] = set()
        self._inflight_rows = 0  # taken for the commit that is running
        self._inflight_bytes = 0
        self._maintenance: asyncio.Task | None = None
        self._last_maintenance = time.monotonic()

    async def positions(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """(next offset, stream time there) of each partition in the lake table."""

        def read() -> dict[int, tuple[int, int]]:
            out = {}
            for partition in partitions:
                pos = self.table.resume(partition)
                out[partition] = (
                    pos.next_offset,
                    NO_TIME if pos.stream_time is None else pos.stream_time,
                )
            return out

        return await asyncio.to_thread(read)

    def take_moved(self) -> dict[int, tuple[int, int]]:
        moved, self._moved = self._moved, {}
        return moved

    def maybe_flush(self, readers) -> None:
        """Start a lake commit if one is due and none is running."""
        if self._task is not None and not self._task.done():
            return
        buffered = self.rows.rows()
        if not buffered:
            self._last_flush = time.monotonic()
            return
        due = time.monotonic() - self._last_flush >= self.settings.lake_flush_ms / 1000
        full = buffered >= self.settings.lake_flush_rows
        if due or full or self.rows.nbytes() >= self.settings.lake_buffer_bytes // 2:
            self._task = asyncio.create_task(self._flush(self._take(readers)), name="lake-flush")

    def repositioned(self, partition: int) -> None:
        """The stage reads `partition` again from the table's position."""
        self._stale.discard(partition)

    def _take(self, readers):
        batches = self.rows.take()
        for partition in self._stale & set(batches):
            del batches[partition]
        # the clock after each partition's last buffered row, kept with the rows: a
        # reader reopened since may stand at an earlier clock (its committed one)
        clocks = {}
        for partition in batches:
            clock = self.rows.clock(partition)
            if clock is None and partition in readers:
                clock = readers[partition].clock.stream_time
            if clock is not None:
                clocks[partition] = clock
        self._last_flush = time.monotonic()
        return batches, clocks

    def pending_rows(self) -> int:
        """Rows not in the lake yet: buffered, and in the commit that is running."""
        return self.rows.rows() + self._inflight_rows

    def pending_bytes(self) -> int:
        return self.rows.nbytes() + self._inflight_bytes

    def full(self) -> bool:
        return (
            self.pending_rows() >= self.max_buffered
            or self.pending_bytes() >= self.settings.lake_buffer_bytes
        )

    async def _flush(self, taken) -> None:
        batches, clocks = taken
        if not batches:
            return
        self._inflight_rows = sum(len(b) for b in batches.values())
        self._inflight_bytes = sum(b.nbytes for b in batches.values())
        try:
            await self._commit(batches, clocks)
        finally:
            self._inflight_rows = self._inflight_bytes = 0

    async def _commit(self, batches, clocks) -> None:
        backoff = Backoff(0.5, 30)
        while True:
            started = time.monotonic()
            try:
                await asyncio.to_thread(self.table.commit, batches, clocks)
                failpoints.reach("after-lake-commit")
                break
            except LakeFenced as exc:
                log.warning("lake: %s; reading those partitions again for the lake", exc)
                # every row buffered for them since follows on from the refused ones
                self._stale |= set(batches)
                self.rows.drop(set(batches))
                positions = await self.positions(list(batches))
                self._moved.update(positions)
                return
            except Exception as exc:  # disk full, read-only, a bug: keep the rows, retry
                error = self._redact(f"{type(exc).__name__}: {exc}")
                self.health.failed(error)
                self.outages.failed("lake", error)  # app/outages.py says so in the log
                await asyncio.sleep(backoff.next())
        self.health.succeeded(sum(len(b) for b in batches.values()), time.monotonic() - started)
        self.outages.ok("lake")

    def _redact(self, text: str) -> str:
        """An error on one line, without the object store's secrets (an error may quote
        them) or the colours and line breaks of delta-rs's error chains."""
        text = " ".join(_ANSI.sub("", text).split())
        location = getattr(self.table, "location", None)
        return text if location is None else location.redact(text)

    def maybe_maintain(self, readers) -> None:
        """Every LAKE_MAINTAIN, on the worker that reads source partition 0 (one worker
        at a time): compact small files and vacuum old versions, in a thread."""
        if 0 not in readers or (self._maintenance and not self._maintenance.done()):
            return
        if time.monotonic() - self._last_maintenance < self.settings.lake_maintain_ms / 1000:
            return
        self._last_maintenance = time.monotonic()
        self._maintenance = asyncio.create_task(self._maintain(), name="lake-maintenance")

    async def _maintain(self) -> None:
        try:
            report = await asyncio.to_thread(self.table.maintain, int(time.time() * 1000))
            self.stats.lake_maintenance = report
            log.info("lake: maintenance %s", report)
        except Exception as exc:  # tried again next time; ingestion goes on regardless
            log.warning(
                "lake: maintenance failed: %s", self._redact(f"{type(exc).__name__}: {exc}")
            )

    async def wait_for_room(self) -> None:
        """Backpressure: while the lake is far behind, reading waits for it."""
        while self.full():
            if self._task is not None and not self._task.done():
                await asyncio.wait([self._task], timeout=0.5)
            else:
                await asyncio.sleep(0.05)
                return

    async def release(self, partitions: set[int], readers) -> None:
        """Before revoked partitions go: commit what is buffered (theirs among it), if
        the lake lets us within RELEASE_TIMEOUT_S; otherwise their new owner reads it
        again (the table refuses a second copy of an offset: LakeFenced)."""
        try:
            if self._task is not None and not self._task.done():
                await asyncio.wait_for(asyncio.shield(self._task), RELEASE_TIMEOUT_S)
            taken = self._take(readers)
            if taken[0]:
                await asyncio.wait_for(self._flush(taken), RELEASE_TIMEOUT_S)
        except TimeoutError:
            log.warning("lake: no commit for revoked partitions %s in time", sorted(partitions))
        self.rows.drop(partitions)
        for partition in partitions:
            self._moved.pop(partition, None)
            self._stale.discard(partition)

    async def stop(self, readers, timeout_s: float = 30.0) -> None:
        """SIGTERM: commit everything buffered within `timeout_s`; what is left is read
        again by the partitions' next owner (the table's positions say from where)."""
        if self._maintenance is not None and not self._maintenance.done():
            self._maintenance.cancel()  # its thread finishes its own commit or nothing
        deadline = time.monotonic() + timeout_s
        try:
            if self._task is not None and not self._task.done():
                await asyncio.wait_for(asyncio.shield(self._task), max(0.1, timeout_s / 2))
            taken = self._take(readers)
            if taken[0] and not self.outages.down("lake"):
                await asyncio.wait_for(self._flush(taken), max(0.1, deadline - time.monotonic()))
            elif taken[0]:
                self._inflight_rows = sum(len(b) for b in taken[0].values())
        except TimeoutError:
            pass
        if self.pending_rows():
            log.warning(
                "lake: stopped with %d rows not committed; the partitions' next owner reads "
                "them again",
                self.pending_rows(),
            )
