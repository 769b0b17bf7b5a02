"""The commit protocol of both stages: one input partition's Kafka transaction.

Every input partition a stage reads (a partition of `user_activity` for the source
stage, a partition of the user-keyed topic for the stateful stage) has a
transactional producer of its own, whose transactional id names the stage's input
topic and the partition. A worker that takes a partition over opens a producer with
the same id first (`PartitionCheckpoint.open`): `init_transactions` aborts whatever
the previous owner had open and bumps the producer epoch, so a later commit of the
previous owner fails with ProducerFenced and none of its records become visible.
Only then does the new owner read where the partition stands (its committed offset,
or its state's changelog): nobody else can move it any more. The committed offset is
read stable (app/kafka_clients.committed_offsets: OffsetFetch with require_stable), as
the group coordinator applies the previous owner's last offsets a moment after fencing.
(aiokafka sends no group generation with offsets, so KIP-447's per-member fencing is
not available.)

`PartitionCheckpoint.commit` states the order; read it first. Nothing here retries a
commit in place: after any failure the caller reopens the partition (`open` again,
then reads its position back from Kafka), which is the only safe answer to a commit
whose outcome is unknown, and a cheap one to the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaError,
    MessageSizeTooLargeError,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
)
from aiokafka.structs import OffsetAndMetadata

from app import failpoints
from app.aiokafka_internals import force_close
from app.errors import CommitFailed, Fenced
from app.throttle import Backoff

log = logging.getLogger(__name__)

Slot = tuple[str, int]  # (topic, partition) an output record goes to
CLOSE_TIMEOUT_S = 5.0
# Kafka's default limit on a record batch (message.max.bytes) is 1 MiB: a record above
# it is refused whatever the producer does, so the stages keep theirs well below.
MAX_RECORD_BYTES = 512 << 10
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


@dataclass
class Committed:
    """What one commit made visible."""

    next_offset: int  # the input position committed with it
    records: int  # output records it holds
    # (topic, partition) -> offset of the last record this commit wrote there
    last_offsets: dict[Slot, int] = field(default_factory=dict)


class PartitionCheckpoint:
    """One input partition's transactional producer: add output records, then commit them
    together with the input position."""

    def __init__(
        self,
        producer,
        source: TopicPartition,
        group_id: str,
        timeout_s: float = 30.0,
        stage: str = "source",
    ) -> None:
        self.producer = producer
        self.source = source
        self.group_id = group_id  # the consumer group whose offset the commits move
        self.timeout_s = timeout_s  # for one whole commit; past it the outcome is unknown
        # crash points (app/failpoints.py): "after-sends" for the source stage,
        # "stateful-after-sends" for the stateful stage
        self._after_sends = "after-sends" if stage == "source" else f"{stage}-after-sends"
        self.stage = stage
        self._batches: dict[Slot, list] = {}
        self.records = 0  # added since the last commit
        self.closed = False

    @classmethod
    async def open(
        cls,
        make_producer: Callable[[str], object],
        transactional_id: str,
        source: TopicPartition,
        group_id: str,
        *,
        timeout_s: float = 30.0,
        stage: str = "source",
        on_error: Callable[[BaseException], None] | None = None,
        backoff: Backoff | None = None,
    ) -> PartitionCheckpoint:
        """Start the partition's producer, fencing its previous owner; while the broker
        cannot be reached, try again with backoff (cancel the caller to give up)."""
        backoff = backoff or Backoff(0.5, 30)
        while True:
            producer = make_producer(transactional_id)
            try:
                # not wait_for: on 3.11 it loses a cancel that meets start()'s failure,
                # and the caller could never give up (the retry loop caught the failure)
                async with asyncio.timeout(timeout_s):
                    await producer.start()
                return cls(producer, source, group_id, timeout_s, stage)
            except (KafkaError, TimeoutError, OSError) as exc:
                await _close(producer)
                if on_error is not None:
                    on_error(exc)
                await asyncio.sleep(backoff.next())
            except BaseException:
                await _close(producer)
                raise

    @property
    def pending(self) -> bool:
        return self.records > 0

    def add(self, topic: str, partition: int, records: Iterable[Sequence]) -> None:
        """Append (key, value) or (key, value, headers) records for the next commit.

        Nothing is sent yet, so nothing here can fail on the broker's account.
        """
        slot = (topic, partition)
        batches = self._batches.get(slot)
        if batches is None:
            batches = self._batches[slot] = [self.producer.create_batch()]
        batch = batches[-1]
        added = 0
        for record in records:
            key, value = record[0], record[1]
            headers = record[2] if len(record) > 2 else []
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                # full: a new batch (which takes any first record: the stages keep
                # records below MAX_RECORD_BYTES, the broker's default limit)
                batch = self.producer.create_batch()
                batches.append(batch)
                batch.append(key=key, value=value, timestamp=None, headers=headers)
            added += 1
        self.records += added

    async def commit(self, next_offset: int, metadata: str = "") -> Committed:
        """Make what was added, and the input position `next_offset`, visible as one.

        In this order, within `timeout_s`:
        1. begin the transaction;
        2. send every batch added since the last commit and wait until the broker has
           each: a batch it refused (too large, say) fails the commit here, before
           the position is added, so a commit never holds fewer records than added;
        3. add the input position: the offset of the next record to read, with
           `metadata`, for `group_id` (`send_offsets_to_transaction`);
        4. commit: a read_committed reader sees every record of it, or none.

        Returns what became visible. Raises
        - Fenced: another worker opened this transactional id; none of it will be
          visible (the broker aborted it). The caller gives the partition up.
        - CommitFailed (`unknown` False): a step before 4 failed; the transaction is
          left open, and aborted when the caller reopens the partition.
        - CommitFailed (`unknown` True): step 4 failed or the time ran out during it;
          it may be visible or not. Reopening completes it either way on the broker,
          and the caller then reads the partition's position back from Kafka.
        After a CommitFailed this checkpoint is closed: reopen the partition.
        """
        batches, self._batches = self._batches, {}
        records, self.records = self.records, 0
        step = "begin"
        sent: list = []
        try:
            async with asyncio.timeout(self.timeout_s):
                await self.producer.begin_transaction()
                step = "send"
                for (topic, partition), slot_batches in batches.items():
                    for batch in slot_batches:
                        if batch.record_count():
                            delivery = await self.producer.send_batch(
                                batch, topic, partition=partition
                            )
                            sent.append(((topic, partition), batch.record_count(), delivery))
                last_offsets: dict[Slot, int] = {}
                for slot, count, delivery in sent:
                    metadata_of = await delivery
                    last_offsets[slot] = metadata_of.offset + count - 1
                failpoints.reach(self._after_sends)
                step = "offsets"
                offsets = {self.source: OffsetAndMetadata(next_offset, metadata)}
                await self.producer.send_offsets_to_transaction(offsets, self.group_id)
                step = "commit"
                await self.producer.commit_transaction()
        except BaseException as exc:
            for _, _, delivery in sent:  # their outcome no longer matters
                delivery.add_done_callback(_retrieve)
            await self.close()
            if isinstance(exc, ProducerFenced):
                raise Fenced(f"{self.source} is owned by another worker now") from exc
            if isinstance(exc, KafkaError | TimeoutError | OSError):
                what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                raise CommitFailed(
                    f"commit of {self.source} failed at {step} ({what})",
                    unknown=step == "commit",
                    too_large=isinstance(exc, TOO_LARGE),
                ) from exc
            raise
        return Committed(next_offset, records, last_offsets)

    def drop(self) -> None:
        """Forget what was added since the last commit (it is read again)."""
        self._batches = {}
        self.records = 0

    async def close(self) -> None:
        """Stop the producer. An open transaction stays open until the next owner (or
        this worker, reopening) fences it, or the broker's transaction timeout ends it."""
        self.drop()
        if not self.closed:
            self.closed = True
            await _close(self.producer)

    async def close_shielded(self) -> None:
        """Close even while the caller is being cancelled (an opening cut short by a
        revocation): a second cancellation leaves it closing on its own."""
        with contextlib.suppress(BaseException):
            await asyncio.shield(self.close())


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


async def _close(producer) -> None:
    """Stop a producer within CLOSE_TIMEOUT_S even when the broker is away: aiokafka's
    stop first waits for every pending batch to be delivered."""
    with contextlib.suppress(Exception):
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):  # not wait_for: see `open`
                await producer.stop()
        except TimeoutError:
            await force_close(producer)
