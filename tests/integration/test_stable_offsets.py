"""The group's committed offsets read stable from the real broker (OffsetFetch v7 with
require_stable, KIP-447; app/kafka_clients.py `committed_offsets`): offsets committed
without a transaction read back; a transaction's offsets are read the moment it commits;
offsets a transaction still holds pending are waited for (the coordinator answers
UNSTABLE_OFFSET_COMMIT, 88), where the same request without require_stable, and
aiokafka's own fetch, answer the offset from before that transaction."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata

from app.aiokafka_internals import offset_fetch
from app.kafka_clients import committed_offsets
from tests.integration.conftest import create_topic

UNSTABLE_OFFSET_COMMIT = 88


@pytest.fixture
async def kafka(bootstrap, unique):
    """(admin client, topic of 2 partitions, group) of this test alone."""
    topic, group = f"stable-{unique}", f"stable-{unique}-group"
    await create_topic(bootstrap, topic, 2)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    yield admin, topic, group
    await admin.delete_topics([topic])
    await admin.close()


async def commit_plainly(bootstrap: str, group: str, offsets: dict) -> None:
    """Offsets committed as a consumer commits them, without a transaction."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    consumer.assign(list(offsets))
    await consumer.start()
    try:
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


@pytest.fixture
async def producer(bootstrap, unique):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"stable-{unique}")
    await producer.start()
    yield producer
    await producer.stop()


async def unstable_read(admin, group: str, tp: TopicPartition) -> tuple[int, int]:
    """(offset, error) as OffsetFetch v7 answers without require_stable."""
    node = await admin.find_coordinator(group)
    response = await offset_fetch(admin, node, group, {tp.topic: [tp.partition]}, False)
    [(_, [(_, offset, _, _, error, _)], _)] = response.topics
    return offset, error


async def test_offsets_committed_without_a_transaction_read_back(bootstrap, kafka):
    admin, topic, group = kafka
    t0, t1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    assert await committed_offsets(admin, group, [t0, t1]) == {t0: None, t1: None}
    await commit_plainly(bootstrap, group, {t0: OffsetAndMetadata(5, "five")})
    got = await committed_offsets(admin, group, [t0, t1])
    assert got == {t0: OffsetAndMetadata(5, "five"), t1: None}
    assert (await admin.list_consumer_group_offsets(group, partitions=[t0]))[t0] == got[t0]


async def test_a_transactions_offsets_are_read_the_moment_it_commits(kafka, producer, caplog):
    """The broker answers EndTxn before the group coordinator has applied the
    transaction's offsets: a read at that moment gets 88 and asks again."""
    caplog.set_level(logging.DEBUG, logger="app.kafka_clients")
    admin, topic, group = kafka
    tp = TopicPartition(topic, 0)
    stale = 0
    for offset in range(1, 21):
        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({tp: OffsetAndMetadata(offset, "")}, group)
        await producer.commit_transaction()
        stable, (unstable, _) = await asyncio.gather(
            committed_offsets(admin, group, [tp]), unstable_read(admin, group, tp)
        )
        assert stable[tp].offset == offset
        stale += unstable != offset
    print(f"without require_stable, {stale} of 20 reads right after a commit were stale")


@pytest.mark.parametrize("end", ["commit", "abort"])
async def test_offsets_pending_in_an_open_transaction_are_waited_for(
    bootstrap, kafka, producer, caplog, end
):
    caplog.set_level(logging.DEBUG, logger="app.kafka_clients")
    admin, topic, group = kafka
    t0, t1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    await commit_plainly(bootstrap, group, {t0: OffsetAndMetadata(3, "three")})
    await producer.begin_transaction()
    await producer.send_offsets_to_transaction({t0: OffsetAndMetadata(10, "ten")}, group)
    # pending at the coordinator: read plainly, the offset from before the transaction
    assert await unstable_read(admin, group, t0) == (3, 0)
    assert (await admin.list_consumer_group_offsets(group, partitions=[t0]))[t0].offset == 3

    reading = asyncio.create_task(committed_offsets(admin, group, [t0, t1]))
    await asyncio.sleep(1.5)
    assert not reading.done()  # asked again and again while the transaction is open
    unstable = [r for r in caplog.records if "not stable yet" in r.getMessage()]
    assert unstable and all(str(UNSTABLE_OFFSET_COMMIT) in r.getMessage() for r in unstable)
    await (producer.commit_transaction() if end == "commit" else producer.abort_transaction())
    got = await asyncio.wait_for(reading, 10)
    want = OffsetAndMetadata(10, "ten") if end == "commit" else OffsetAndMetadata(3, "three")
    assert got == {t0: want, t1: None}
