"""The Kafka outputs as a sink: adds one batch's outputs to its source partition's
checkpoint, and says what went to the dead-letter topic and what was late (at most
once a minute each). The checkpoints commit in app/commit/checkpoint.py."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable

from app.commit.checkpoint import MAX_RECORD_BYTES, PartitionCheckpoint
from app.limits import RecordLimits, headers_bytes
from app.outages import THROTTLED
from app.settings import Settings
from app.sinks.contract import SinkHealth
from app.source.reader import BatchOutput, DeadLetter
from app.stats import Stats
from app.throttle import LogThrottle
from app.wire import encode_events_bounded

log = logging.getLogger(__name__)


class OutputWriter:
    name = "kafka"

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        dlq_partitions: int,
        tasks: dict,
        positions: Callable[[list[int]], Awaitable[dict[int, tuple[int, int]]]],
        limits: RecordLimits | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits or RecordLimits.kafka_defaults()
        self.stats = stats
        self.dlq_partitions = dlq_partitions
        self.tasks = tasks  # the source stage's, one per source partition
        self._positions = positions
        self.health = SinkHealth(settings.kafka_bootstrap_servers)
        self._dlq_log = LogThrottle(60)
        self._late_log = LogThrottle(60)

    def pending_rows(self) -> int:
        """Records added and not committed yet."""
        return sum(task.checkpoint.records for task in self.tasks.values())

    async def positions(self, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """(offset, stream time) each partition's committed outputs reach: the offset
        committed with them and the source clock stored beside it."""
        return await self._positions(partitions)

    def write(self, partition: int, out: BatchOutput, checkpoint: PartitionCheckpoint) -> None:
        settings = self.settings
        for target, records in out.enriched.items():
            checkpoint.add(settings.enriched_topic, target, records)
        for target, events in out.forward.items():
            checkpoint.add(
                settings.internal_topic,
                target,
                [
                    (None, value)
                    for value in encode_events_bounded(
                        events, min(MAX_RECORD_BYTES, self.limits.user_keyed)
                    )
                ],
            )
        if out.dead_letters:
            checkpoint.add(
                settings.dlq_topic,
                partition % self.dlq_partitions,
                [
                    fit(d.key, d.value, self.headers(partition, d), self.limits.dead_letter)
                    for d in out.dead_letters
                ],
            )
            self._dead_lettered(partition, out.dead_letters)
        if out.first_late is not None and self._late_log.allow(partition):
            offset, behind_ms = out.first_late
            log.info(
                "source: late event on partition %d at offset %d (%.1fs behind the watermark; "
                "logged once a minute)",
                partition,
                offset,
                behind_ms / 1000,
            )

    def headers(self, partition: int, dead: DeadLetter) -> list[tuple[str, bytes]]:
        return [
            ("reason", dead.reason.encode()),
            ("detail", dead.detail.encode()[:500]),
            ("source_topic", self.settings.input_topic.encode()),
            ("source_partition", str(partition).encode()),
            ("source_offset", str(dead.offset).encode()),
        ]

    def _dead_lettered(self, partition: int, dead_letters: list[DeadLetter]) -> None:
        for dead in dead_letters:
            self.stats.on_dead_letter(partition, dead.reason)
            if self._dlq_log.allow(dead.reason):
                log.warning(
                    "source: dead-lettered partition %d offset %d: %s: %s (logged once a "
                    "minute per reason)",
                    partition,
                    dead.offset,
                    dead.reason,
                    dead.detail,
                    extra=THROTTLED,
                )


def fit(key: bytes | None, value: bytes | None, headers: list, limit: int) -> tuple:
    """A dead letter that fits its topic's `limit`: as sent if it can be, else with its
    value (and if need be its key) cut to fit and headers that say so, with the full
    size and SHA-256 of what was cut. The record itself stays in the input topic, at
    the partition and offset the headers name."""
    key_size, value_size = len(key or b""), len(value or b"")
    if key_size + value_size + headers_bytes(headers) <= limit:
        return key, value, headers
    cut = []
    headers = [*headers, ("value_size", str(value_size).encode())]
    headers.append(("value_sha256", hashlib.sha256(value or b"").hexdigest().encode()))
    # what the headers take once they say what was cut (the key's pair included)
    room = max(0, limit - headers_bytes(headers) - 256)
    if key_size > room // 4:
        headers.append(("key_size", str(key_size).encode()))
        headers.append(("key_sha256", hashlib.sha256(key).hexdigest().encode()))
        key = key[: room // 4]
        cut.append("key")
    kept = (value or b"")[: max(0, room - len(key or b""))]
    if len(kept) < value_size:
        cut.append("value")
    value = kept
    headers.append(("truncated", ",".join(cut).encode()))
    return key, value, headers
