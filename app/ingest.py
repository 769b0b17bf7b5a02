"""The source stage: decode, judge lateness at the source partition, fan out.

Every record of `user_activity` goes to exactly one of: the dead-letter topic, or
the lake + the enriched topic (+ the user-keyed topic when on time). Offsets are
acknowledged only after the lake file holding them is renamed into place and the
producer has flushed, so a commit never runs ahead of the sinks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from app.errors import BadEvent
from app.events import decode, iso_utc
from app.settings import Settings
from app.sinks import lake
from app.stats import Stats
from tables.watermark import SourceClock

log = logging.getLogger(__name__)
EVENT, MARK = 0, 1


@dataclass
class Source:
    """One assigned source partition."""

    clock: SourceClock
    skip_through: int  # offsets up to here are already in the lake and downstream
    last_read: int = -1
    last_event_wall: float = field(default_factory=time.monotonic)


class IngestProcessor:
    def __init__(self, settings: Settings, producer, consumer, stats: Stats) -> None:
        self.settings = settings
        self.producer = producer
        self.consumer = consumer
        self.stats = stats
        self.lake_dir = Path(settings.lake_dir)
        self.sources: dict[int, Source] = {}
        self.buffer = lake.LakeBuffer()
        self.held: dict[int, list] = {}
        self.flush_lock = asyncio.Lock()
        self.last_flush = time.monotonic()
        self._dlq_logged: dict[str, float] = {}

    # -- partitions ----------------------------------------------------------

    def source(self, partition: int) -> Source:
        src = self.sources.get(partition)
        if src is None:
            last, stream_time = lake.resume_point(self.lake_dir, partition)
            clock = SourceClock(self.settings.lateness_ms)
            if stream_time is not None:
                clock.stream_time = stream_time
            src = self.sources[partition] = Source(clock, skip_through=last, last_read=last)
            if last >= 0:
                log.info("ingest: partition %d resumes after lake offset %d", partition, last)
        return src

    async def revoke(self, partitions: set[int]) -> None:
        """Drop what revoked partitions buffered; their new owner re-reads it."""
        async with self.flush_lock:
            for partition in partitions:
                self.sources.pop(partition, None)
                self.buffer.partitions.pop(partition, None)
                self.held.pop(partition, None)

    # -- records -------------------------------------------------------------

    async def handle(self, events: list) -> None:
        now_ms = int(time.time() * 1000)
        wall = time.monotonic()
        processing_iso = iso_utc(now_ms)
        send = self.producer.send
        settings = self.settings
        for event in events:
            msg = event.message
            partition, offset = msg.partition, msg.offset
            src = self.source(partition)
            if offset <= src.skip_through:
                self.stats.skipped += 1
                continue
            src.last_read = offset
            src.last_event_wall = wall
            msg.incref()
            self.held.setdefault(partition, []).append(msg)
            try:
                ev = decode(msg.value, now_ms, settings.max_future_ms)
            except BadEvent as exc:
                await self._dead_letter(msg, exc)
                continue
            late = src.clock.observe(ev.event_time)
            self.stats.on_event(partition, late, src.clock)
            self.buffer.add(partition, offset, ev, now_ms)
            key = ev.user_id.encode()
            enriched = dict(ev.fields)
            enriched["user_id"] = ev.user_id
            enriched["event_time"] = iso_utc(ev.event_time)
            enriched["processing_time"] = processing_iso
            enriched["kafka_partition"] = partition
            enriched["kafka_offset"] = offset
            await send(settings.enriched_topic, key, orjson.dumps(enriched), None, None, None)
            if late:
                if self.stats.late_logged(partition):
                    log.info(
                        "ingest: late event on partition %d at offset %d (%s behind the watermark)",
                        partition,
                        offset,
                        f"{(src.clock.watermark - ev.event_time) / 1000:.1f}s",
                    )
                continue
            forward = orjson.dumps(
                [EVENT, partition, offset, ev.event_time, ev.user_id, ev.event_type, ev.page_url]
            )
            await send(settings.internal_topic, key, forward, None, None, None)
        if self.buffer.rows() >= settings.lake_flush_rows:
            await self.flush()

    async def _dead_letter(self, msg, exc: BadEvent) -> None:
        headers = [
            ("reason", exc.reason.encode()),
            ("detail", exc.detail.encode()[:500]),
            ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()),
        ]
        await self.producer.send(self.settings.dlq_topic, msg.key, msg.value, None, None, headers)
        self.stats.on_dead_letter(msg.partition, exc.reason)
        now = time.monotonic()
        if now - self._dlq_logged.get(exc.reason, -1e9) >= 60:
            self._dlq_logged[exc.reason] = now
            log.warning(
                "ingest: dead-lettered partition %d offset %d: %s (logged once a minute "
                "per reason)",
                msg.partition,
                msg.offset,
                exc,
            )

    # -- flushing ------------------------------------------------------------

    async def flush_if_due(self) -> None:
        if time.monotonic() - self.last_flush >= self.settings.lake_flush_ms / 1000:
            await self.flush()

    async def flush(self) -> None:
        async with self.flush_lock:
            buffers = self.buffer.take()
            held, self.held = self.held, {}
            clocks = {p: self.sources[p].clock.stream_time for p in buffers if p in self.sources}
            self.last_flush = time.monotonic()
            if not buffers and not held:
                return
            await self.producer.flush()
            delay = 0.5
            while True:
                try:
                    await asyncio.to_thread(self._write, buffers, clocks)
                    break
                except Exception as exc:  # disk full, read-only, a bug: keep data, retry
                    self.stats.lake_errors += 1
                    self.stats.lake_last_error = f"{type(exc).__name__}: {exc}"
                    log.error(
                        "lake: cannot write to %s (%s); processing waits and retries in "
                        "%.0fs, nothing is acknowledged meanwhile",
                        self.lake_dir,
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
            self.stats.lake_last_error = None
            for messages in held.values():
                for msg in messages:
                    msg.ack(self.consumer)

    def _write(self, buffers: dict[int, lake.PartitionBuffer], clocks: dict[int, int]) -> None:
        started = time.monotonic()
        rows = 0
        for partition, buf in buffers.items():
            lake.write_partition(self.lake_dir, partition, buf, clocks.get(partition, 0))
            rows += len(buf)
        self.stats.lake_rows += rows
        self.stats.lake_flush_s = time.monotonic() - started

    # -- watermarks ----------------------------------------------------------

    async def send_marks(
        self, assigned: list[int], sources: int, partitions: int, highwater
    ) -> None:
        """Tell every user-keyed partition how far each assigned source partition has got."""
        now = time.monotonic()
        idle_after = self.settings.idle_advance_ms / 1000
        for partition in assigned:
            src = self.source(partition)
            end = highwater(partition)
            at_end = end is not None and src.last_read + 1 >= end
            idle = at_end and now - src.last_event_wall >= idle_after
            mark = orjson.dumps([MARK, partition, sources, src.clock.watermark, idle])
            for target in range(partitions):
                await self.producer.send(
                    self.settings.internal_topic, None, mark, target, None, None
                )
