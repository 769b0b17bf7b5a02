"""The commit protocol against an in-memory Kafka that can fail at every step: what a
read_committed reader and the consumer group see after each outcome."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition

from app.commit.checkpoint import PartitionCheckpoint
from app.errors import CommitFailed, Fenced
from app.throttle import Backoff
from tests.unit.fake_kafka import FakeKafka

SOURCE = TopicPartition("input", 0)
GROUP = "stage"
TXN_ID = "app-input-0"


def kafka_with_topics() -> FakeKafka:
    kafka = FakeKafka()
    kafka.create_topic("input", 1)
    kafka.create_topic("out", 2)
    return kafka


async def opened(kafka: FakeKafka, **options) -> PartitionCheckpoint:
    return await PartitionCheckpoint.open(
        kafka.producer, TXN_ID, SOURCE, GROUP, backoff=Backoff(0.001, 0.01), **options
    )


def values(kafka: FakeKafka, topic: str = "out") -> list[bytes]:
    return sorted(r.value for r in kafka.visible(topic))


def committed_offset(kafka: FakeKafka) -> int | None:
    offset = kafka.groups[GROUP].get(SOURCE)
    return None if offset is None else offset.offset


def add_records(checkpoint: PartitionCheckpoint, n: int, partition: int = 0) -> None:
    checkpoint.add("out", partition, [(b"k", b"v%03d" % i) for i in range(n)])


async def test_records_and_the_input_position_become_visible_together():
    kafka = kafka_with_topics()
    checkpoint = await opened(kafka)
    add_records(checkpoint, 250)  # three batches of the fake's 100
    checkpoint.add("out", 1, [(b"k", b"other", [("h", b"1")])])
    assert values(kafka) == [] and committed_offset(kafka) is None  # nothing sent yet
    done = await checkpoint.commit(42, "meta")
    assert len(values(kafka)) == 251
    assert committed_offset(kafka) == 42
    assert kafka.groups[GROUP][SOURCE].metadata == "meta"
    assert done.records == 251
    assert done.last_offsets == {("out", 0): 249, ("out", 1): 0}
    assert not checkpoint.pending


async def test_a_batch_the_broker_refuses_fails_the_commit_before_the_position_moves():
    kafka = kafka_with_topics()
    checkpoint = await opened(kafka)
    add_records(checkpoint, 150)
    kafka.fail("send", after=1)  # the second batch is refused (MessageSizeTooLarge)
    with pytest.raises(CommitFailed) as failed:
        await checkpoint.commit(10)
    assert not failed.value.unknown
    assert checkpoint.closed
    assert values(kafka) == [] and committed_offset(kafka) is None
    # the first batch is on the broker, in a transaction left open: it holds
    # read_committed readers back until the partition is reopened
    assert kafka.highwater("out", 0) == 100 and kafka.lso("out", 0) == 0
    reopened = await opened(kafka)
    assert kafka.lso("out", 0) == kafka.highwater("out", 0)  # aborted by the new epoch
    assert values(kafka) == [] and committed_offset(kafka) is None
    add_records(reopened, 3)
    await reopened.commit(10)
    assert len(values(kafka)) == 3 and committed_offset(kafka) == 10


@pytest.mark.parametrize("step", ["offsets", "commit"])
async def test_a_failed_request_leaves_nothing_visible_after_reopening(step):
    kafka = kafka_with_topics()
    checkpoint = await opened(kafka)
    add_records(checkpoint, 5)
    kafka.fail(step)
    with pytest.raises(CommitFailed) as failed:
        await checkpoint.commit(7)
    assert failed.value.unknown == (step == "commit")
    await opened(kafka)
    assert values(kafka) == [] and committed_offset(kafka) is None


async def test_a_commit_whose_reply_is_lost_is_unknown_and_reopening_shows_it_landed():
    kafka = kafka_with_topics()
    checkpoint = await opened(kafka)
    add_records(checkpoint, 5)
    kafka.fail("commit-reply")
    with pytest.raises(CommitFailed) as failed:
        await checkpoint.commit(7)
    assert failed.value.unknown  # the caller may not assume it failed
    await opened(kafka)
    assert len(values(kafka)) == 5 and committed_offset(kafka) == 7


async def test_a_former_owner_is_fenced_and_its_open_transaction_never_shows():
    kafka = kafka_with_topics()
    old = await opened(kafka)
    await old.commit(1)  # a first, empty commit: only the position
    add_records(old, 4)
    # the old owner's records are on the broker, in its open transaction...
    await old.producer.begin_transaction()
    old.producer._join()
    kafka.append("out", 0, b"k", b"in flight", txn=old.producer.txn)
    old.producer.txn = None
    # ...when a new owner opens the same transactional id
    new = await opened(kafka)
    with pytest.raises(Fenced):
        await old.commit(99)
    assert values(kafka) == [] and committed_offset(kafka) == 1
    add_records(new, 2)
    await new.commit(5)
    assert len(values(kafka)) == 2 and committed_offset(kafka) == 5


async def test_a_send_that_never_completes_runs_into_the_commit_timeout():
    kafka = kafka_with_topics()
    checkpoint = await opened(kafka, timeout_s=0.05)
    add_records(checkpoint, 5)
    kafka.fail("hang-send")
    with pytest.raises(CommitFailed) as failed:
        await checkpoint.commit(3)
    assert "TimeoutError" in str(failed.value) and not failed.value.unknown
    await opened(kafka)
    assert values(kafka) == [] and committed_offset(kafka) is None


async def test_opening_waits_for_an_away_broker_and_reports_each_attempt():
    kafka = kafka_with_topics()
    kafka.fail("init", 3)
    errors = []
    checkpoint = await opened(kafka, on_error=errors.append)
    assert len(errors) == 3 and not checkpoint.closed
    await checkpoint.commit(0)
    assert committed_offset(kafka) == 0


async def test_opening_can_be_given_up():
    kafka = kafka_with_topics()
    kafka.fail("init", 1000)
    task = asyncio.create_task(opened(kafka))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_dropped_records_are_never_sent():
    kafka = kafka_with_topics()
    checkpoint = await opened(kafka)
    add_records(checkpoint, 5)
    checkpoint.drop()
    assert not checkpoint.pending
    await checkpoint.commit(2)
    assert values(kafka) == [] and committed_offset(kafka) == 2
