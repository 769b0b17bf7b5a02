"""One source partition's batch of records -> what each sink gets. Pure: no I/O.

A partition is read from where its two sinks stand: offsets below `kafka_from` are
already in the committed Kafka outputs (enriched, dead letters, the user-keyed
topic) and offsets below `lake_from` are in the lake. Reading from the lower of the
two with the source clock recorded there gives every record the same lateness
verdict it had the first time, so a sink that is behind is filled in exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import orjson

from app.errors import BadEvent
from app.events import decode
from app.limits import RecordLimits
from app.source.partitioner import KeyPartitioner
from app.timeutil import iso_utc
from app.wire import ForwardedEvent
from tables.watermark import SourceClock


@dataclass
class DeadLetter:
    key: bytes | None
    value: bytes | None
    offset: int
    reason: str
    detail: str


@dataclass
class BatchOutput:
    """Records for one source partition's transaction, and rows for the lake."""

    enriched: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    forward: dict[int, list[ForwardedEvent]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events: int = 0
    late: int = 0
    first_late: tuple[int, int] | None = None  # (offset, ms behind the watermark)

    def __bool__(self) -> bool:
        return bool(self.enriched or self.forward or self.dead_letters)


@dataclass
class PartitionReader:
    """Where one assigned source partition stands, and its clock."""

    partition: int
    clock: SourceClock
    next_offset: int
    kafka_from: int
    lake_from: int
    last_record_wall: float = field(default_factory=time.monotonic)
    # Kafka timestamps (ms) of the records in the open transaction, for the latency
    pending_timestamps: list[int] = field(default_factory=list)

    @property
    def last_read(self) -> int:
        return self.next_offset - 1


class BatchReader:
    """Turns records into enriched JSON, user-keyed forwards, dead letters and lake rows."""

    def __init__(
        self,
        max_future_ms: int,
        enriched_partition: KeyPartitioner,
        user_partition: KeyPartitioner,
        lake_rows,
        limits: RecordLimits | None = None,
        future_from_ms: int | None = None,
    ) -> None:
        self.max_future_ms = max_future_ms
        self.limits = limits or RecordLimits.kafka_defaults()
        self.future_from_ms = future_from_ms  # MAX_FUTURE_FROM; None: `now_ms` of read()
        self.enriched_partition = enriched_partition
        self.user_partition = user_partition
        self.lake_rows = lake_rows  # app.sinks.lake.LakeRows

    def read(self, reader: PartitionReader, records, now_ms: int) -> BatchOutput:
        out = BatchOutput()
        partition = reader.partition
        clock = reader.clock
        observe = clock.observe
        kafka_from, lake_from = reader.kafka_from, reader.lake_from
        next_offset = reader.next_offset
        processing_iso = iso_utc(now_ms)
        max_future_ms = self.max_future_ms
        future_from_ms = now_ms if self.future_from_ms is None else self.future_from_ms
        enriched_partition, user_partition = self.enriched_partition, self.user_partition
        # the same partition count partitions a key the same way: compute it once
        same_partitions = enriched_partition.partitions == user_partition.partitions
        add_lake_row = self.lake_rows.add
        dumps, join = orjson.dumps, b"".join
        max_enriched = self.limits.enriched
        lake_bytes = 0
        enriched, forward = out.enriched, out.forward
        for record in records:
            offset = record.offset
            if offset < next_offset:
                continue  # delivered again after a seek
            next_offset = offset + 1
            to_kafka = offset >= kafka_from
            try:
                event = decode(record.value, future_from_ms, max_future_ms)
                event_time = event.event_time
                late = event_time < clock.watermark  # what observe() says once it is taken
                user_id = event.user_id
                key = user_id.encode()
                value = dict(event.fields)
                value["user_id"] = user_id
                value["event_time"] = iso_utc(event_time)
                value["processing_time"] = processing_iso
                value["kafka_partition"] = partition
                value["kafka_offset"] = offset
                value["late"] = late
                # orjson >= 3.12 returns its 4-KB working buffer: copied to its length,
                # a batch's enriched values hold 20k x ~0.4 KB, not 20k x 4 KB, until sent
                enriched_value = join((dumps(value), b""))
                # The same verdict whether the record is read for every sink or again for
                # the lake only, under the same limits (docs/contract.md, Limits).
                if len(key) + len(enriched_value) > max_enriched:
                    size = len(key) + len(enriched_value)
                    raise BadEvent(
                        "too_large",
                        f"its enriched record would be {size:,} bytes, more than the "
                        f"{max_enriched:,} its topic takes",
                    )
            except BadEvent as exc:
                if to_kafka:
                    out.dead_letters.append(
                        DeadLetter(record.key, record.value, offset, exc.reason, exc.detail)
                    )
                continue
            except Exception as exc:  # a bug met on an odd record: set it aside, go on
                if to_kafka:
                    detail = f"{type(exc).__name__}: {exc}"[:300]
                    out.dead_letters.append(
                        DeadLetter(record.key, record.value, offset, "internal_error", detail)
                    )
                continue
            observe(event_time)
            if offset >= lake_from:
                add_lake_row(partition, offset, event, now_ms, late)
                lake_bytes += len(record.value)
            if not to_kafka:
                continue
            out.events += 1
            target = enriched_partition(key)
            bucket = enriched.get(target)
            if bucket is None:
                bucket = enriched[target] = []
            bucket.append((key, enriched_value))
            if late:
                out.late += 1
                if out.first_late is None:
                    out.first_late = (offset, clock.watermark - event_time)
                continue
            if not same_partitions:
                target = user_partition(key)
            bucket = forward.get(target)
            if bucket is None:
                bucket = forward[target] = []
            bucket.append(
                (partition, offset, event_time, user_id, event.event_type, event.page_url)
            )
        if lake_bytes:
            self.lake_rows.added(partition, lake_bytes, clock.stream_time)
        self.lake_rows.seal(partition)  # to Arrow once there are enough open rows
        reader.next_offset = next_offset
        # what this pass handed to each sink (the open transaction, the lake buffer)
        reader.kafka_from = max(kafka_from, next_offset)
        reader.lake_from = max(lake_from, next_offset)
        if records:
            reader.last_record_wall = time.monotonic()
            reader.pending_timestamps += [r.timestamp for r in records if r.offset >= kafka_from]
        return out
