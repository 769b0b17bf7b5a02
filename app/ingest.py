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
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2

from app.errors import BadEvent
from app.events import decode, iso_utc
from app.read_order import GAP_SEEKS, ReadOrder, Verdict
from app.settings import Settings
from app.sinks import lake
from app.stats import Stats
from tables.watermark import SourceClock

log = logging.getLogger(__name__)
EVENTS, MARK = 0, 1
_PARTITION_CACHE_MAX = 1_000_000


class KeyPartitioner:
    """Kafka's default (murmur2) partition of a key, as Java clients compute it; cached."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        partition = self._cache.get(key)
        if partition is None:
            if len(self._cache) >= _PARTITION_CACHE_MAX:
                self._cache.clear()
            partition = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            self._cache[key] = partition
        return partition


class BatchSender:
    """Appends records to one aiokafka batch per topic partition; far cheaper than send()."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.batches: dict[tuple[str, int], object] = {}
        self.inflight: list[asyncio.Future] = []
        # Batches must reach the producer in the order they were filled: a watermark
        # mark overtaking the events it covers would make them late downstream.
        self._send_lock = asyncio.Lock()

    async def add(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: list | None = None,
    ) -> None:
        batch = self.batches.get((topic, partition))
        if batch is None:
            batch = self.batches[(topic, partition)] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
            del self.batches[(topic, partition)]
            async with self._send_lock:
                await self._send(topic, partition, batch)
            await self.add(topic, partition, key, value, headers)

    async def _send(self, topic: str, partition: int, batch) -> None:
        self.inflight.append(await self.producer.send_batch(batch, topic, partition=partition))

    async def send_all(self) -> None:
        batches, self.batches = self.batches, {}
        async with self._send_lock:
            for (topic, partition), batch in batches.items():
                if batch.record_count():
                    await self._send(topic, partition, batch)

    async def send_and_detach(self) -> list[asyncio.Future]:
        """Send everything filled so far; return the futures that resolve on delivery."""
        await self.send_all()
        inflight, self.inflight = self.inflight, []
        return inflight


@dataclass
class Source:
    """One assigned source partition."""

    clock: SourceClock
    order: ReadOrder
    last_event_wall: float = field(default_factory=time.monotonic)

    @property
    def last_read(self) -> int:
        return self.order.last_read


class IngestProcessor:
    def __init__(self, settings: Settings, consumer, stats: Stats) -> None:
        self.settings = settings
        # source partitions this worker owns, as of the last rebalance signal (see
        # MergeProcessor.owned); None until the first assignment
        self.owned: set[int] | None = None
        self.consumer = consumer
        self.stats = stats
        self.lake_dir = Path(settings.lake_dir)
        self.sources: dict[int, Source] = {}
        self.buffer = lake.LakeBuffer()
        self.held: dict[int, list] = {}
        # records past a hole in a partition's offsets, held until the re-read reaches them
        self.ahead: dict[int, list] = {}
        self.flush_lock = asyncio.Lock()
        self.last_flush = time.monotonic()
        self._dlq_logged: dict[str, float] = {}
        self.producer: AIOKafkaProducer | None = None
        self.sender: BatchSender | None = None
        self.dlq_partitions = 1
        self.enriched_partition: KeyPartitioner | None = None
        self.user_partition = KeyPartitioner(settings.partitions)
        # handle() and send_marks() never interleave: a mark is computed only between batches.
        self.process_lock = asyncio.Lock()
        self._start_lock = asyncio.Lock()

    async def start(self, **kafka_options) -> None:
        """Own producer: records go out as whole batches per partition, not one by one."""
        from app.settings import kafka_client_options  # TLS/SASL as for Faust's clients

        async with self._start_lock:
            if self.sender is not None:
                return
            options = {
                "bootstrap_servers": self.settings.kafka_bootstrap_servers,
                "acks": "all",
                "linger_ms": 5,
                "max_batch_size": 1 << 20,
                "max_request_size": 8 << 20,
                "enable_idempotence": True,
                # Ride out a broker outage like Faust's own producer (its default
                # producer_request_timeout is 20 min): with aiokafka's 40 s a batch expires
                # while the broker is away and the failed flush crashes the worker.
                "request_timeout_ms": 1_200_000,
                **kafka_client_options(self.settings),
                **kafka_options,
            }
            producer = AIOKafkaProducer(**options)
            await producer.start()
            partitions = await producer.partitions_for(self.settings.enriched_topic)
            self.enriched_partition = KeyPartitioner(len(partitions))
            self.dlq_partitions = len(await producer.partitions_for(self.settings.dlq_topic))
            self.producer = producer
            self.sender = BatchSender(producer)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    # -- partitions ----------------------------------------------------------

    def source(self, partition: int) -> Source:
        src = self.sources.get(partition)
        if src is None:
            last, stream_time = lake.resume_point(self.lake_dir, partition)
            clock = SourceClock(self.settings.lateness_ms)
            if stream_time is not None:
                clock.stream_time = stream_time
            src = self.sources[partition] = Source(clock, ReadOrder(last, last))
            if last >= 0:
                log.info("ingest: partition %d resumes after lake offset %d", partition, last)
        return src

    def assign(self, partitions: set[int]) -> None:
        self.owned = set(partitions)

    async def revoke(self, partitions: set[int]) -> None:
        """Drop what revoked partitions buffered; their new owner re-reads it."""
        self.owned = set()  # until the next assignment nothing is ours
        async with self.process_lock, self.flush_lock:
            for partition in partitions:
                self.sources.pop(partition, None)
                self.buffer.partitions.pop(partition, None)
                self.held.pop(partition, None)
                self.ahead.pop(partition, None)

    # -- records -------------------------------------------------------------

    async def handle(self, events: list) -> None:
        if self.sender is None:
            await self.start()
        async with self.process_lock:
            await self._handle(events)
        if self.buffer.rows() >= self.settings.lake_flush_rows:
            await self.flush()

    async def _handle(self, events: list) -> None:
        now_ms = int(time.time() * 1000)
        wall = time.monotonic()
        processing_iso = iso_utc(now_ms)
        settings = self.settings
        sender = self.sender
        enriched_topic = settings.enriched_topic
        enriched_partition = self.enriched_partition
        forward: dict[int, list] = {}
        owned = self.owned
        for event in events:
            msg = event.message
            partition, offset = msg.partition, msg.offset
            if owned is not None and partition not in owned:
                continue
            src = self.source(partition)
            verdict = src.order.classify(offset, wall)
            if verdict is not Verdict.NEW and await self._not_next(msg, src, verdict):
                continue
            src.order.read(offset)
            src.last_event_wall = wall
            self._hold(msg, self.held)
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
            await sender.add(enriched_topic, enriched_partition(key), key, orjson.dumps(enriched))
            if late:
                if self.stats.late_logged(partition):
                    behind = (src.clock.watermark - ev.event_time) / 1000
                    log.info(
                        "ingest: late event on partition %d at offset %d (%.1fs behind the "
                        "watermark; logged once a minute)",
                        partition,
                        offset,
                        behind,
                    )
                continue
            forward.setdefault(self.user_partition(key), []).append(
                (partition, offset, ev.event_time, ev.user_id, ev.event_type, ev.page_url)
            )
        for target, records in forward.items():
            await sender.add(settings.internal_topic, target, None, orjson.dumps([EVENTS, records]))
        await sender.send_all()

    async def _not_next(self, msg, src: Source, verdict: Verdict) -> bool:
        """Deal with a record that is not the next offset; True if it is skipped."""
        partition, offset = msg.partition, msg.offset
        if verdict is Verdict.IN_LAKE:
            self.stats.skipped += 1
            return True
        if verdict is Verdict.AGAIN:
            # Delivered again (Faust seeks to the committed offset after a rebalance)
            # while this owner still buffers the first copy: skip it, but hold its ack
            # too, or the commit would run ahead of the lake.
            self.stats.skipped += 1
            self._hold(msg, self.held)
            return True
        if verdict is Verdict.GAP_ACCEPTED:
            log.warning(
                "ingest: partition %d offsets %d..%d are not in the topic after %d re-reads "
                "(transaction markers or compaction); going on from %d",
                partition,
                src.order.expected,
                offset - 1,
                GAP_SEEKS,
                offset,
            )
            return False
        # SEEK or AHEAD: past a hole; held (not acknowledged) until the re-read passes it
        self.stats.skipped += 1
        self._hold(msg, self.ahead)
        if verdict is Verdict.SEEK:
            self.stats.rereads += 1
            log.warning(
                "ingest: partition %d jumped from offset %d to %d; re-reading from %d",
                partition,
                src.order.last_read,
                offset,
                src.order.expected,
            )
            await self.consumer.seek_wait({msg.tp: src.order.expected})
        return True

    @staticmethod
    def _hold(msg, into: dict[int, list]) -> None:
        """Keep `msg` unacknowledged (Faust commits past it only once it is acked)."""
        msg.incref()
        into.setdefault(msg.partition, []).append(msg)

    async def _dead_letter(self, msg, exc: BadEvent) -> None:
        headers = [
            ("reason", exc.reason.encode()),
            ("detail", exc.detail.encode()[:500]),
            ("source_topic", msg.topic.encode()),
            ("source_partition", str(msg.partition).encode()),
            ("source_offset", str(msg.offset).encode()),
        ]
        # Through the batch sender: a record with neither key nor value is legal here
        # (send() refuses it), and flush() waits for its delivery before acking it.
        await self.sender.add(
            self.settings.dlq_topic,
            msg.partition % self.dlq_partitions,
            msg.key,
            msg.value,
            headers,
        )
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
        """Make the lake and every record sent so far durable, then acknowledge the offsets.

        The cut is taken between two batches (under process_lock): a lake file must never
        hold an event whose forward to the user-keyed topic has not been sent, or a crash
        after its offset commit would lose that event downstream.
        """
        async with self.flush_lock:
            async with self.process_lock:
                buffers = self.buffer.take()
                self._release_ahead()
                held, self.held = self.held, {}
                clocks = {
                    p: self.sources[p].clock.stream_time for p in buffers if p in self.sources
                }
                self.last_flush = time.monotonic()
                if not buffers and not held:
                    return
                inflight = await self.sender.send_and_detach() if self.sender else []
            if inflight:
                await asyncio.gather(*inflight)
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

    def _release_ahead(self) -> None:
        """Records held past a hole that the re-read has since processed: their data is
        in the buffer this flush writes, so they may be acknowledged with it."""
        for partition, messages in list(self.ahead.items()):
            src = self.sources.get(partition)
            if src is None:
                continue
            done = [m for m in messages if m.offset <= src.order.last_read]
            if done:
                self.held.setdefault(partition, []).extend(done)
                self.ahead[partition] = [m for m in messages if m.offset > src.order.last_read]

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
        if self.sender is None:
            await self.start()
        async with self.process_lock:
            await self._send_marks(assigned, sources, partitions, highwater)

    async def _send_marks(self, assigned, sources, partitions, highwater) -> None:
        now = time.monotonic()
        idle_after = self.settings.idle_advance_ms / 1000
        for partition in assigned:
            src = self.source(partition)
            end = highwater(partition)
            at_end = end is not None and src.last_read + 1 >= end
            idle = at_end and now - src.last_event_wall >= idle_after
            mark = orjson.dumps([MARK, partition, sources, src.clock.watermark, idle])
            for target in range(partitions):
                await self.sender.add(self.settings.internal_topic, target, None, mark)
        await self.sender.send_all()
