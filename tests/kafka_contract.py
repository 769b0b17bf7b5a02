"""What the in-memory Kafka (tests/unit/fake_kafka.py) must do as the broker does: one
suite of behaviours, run against the fake (tests/unit/test_fake_kafka.py) and against
the real broker (tests/integration/test_fake_kafka_contract.py).

A `Cluster` gives both the same way: topics, transactional producers, a read_committed
reader without a group, an admin client, and `compacted` (the fake compacts at once;
the broker's log cleaner is waited for). The behaviours use only the client calls the
stages make (create_batch/send_batch, send_offsets_to_transaction, end_offsets under
read_committed, list_consumer_group_offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Protocol

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import OffsetAndMetadata


class Cluster(Protocol):
    async def create_topic(self, name: str, partitions: int, compact: bool = False) -> None: ...

    def producer(self, transactional_id: str): ...

    def reader(self): ...

    def admin(self): ...

    async def compacted(self, topic: str, partition: int, expect) -> list: ...


def name(what: str) -> str:
    return f"contract-{what}-{uuid.uuid4().hex[:8]}"


async def send(producer, topic: str, partition: int, records) -> int:
    """Send (key, value) records as one batch; the offset of the first."""
    batch = producer.create_batch()
    for key, value in records:
        assert batch.append(key=key, value=value, timestamp=None, headers=[]) is not None
    metadata = await (await producer.send_batch(batch, topic, partition=partition))
    return metadata.offset


async def topic_and_producer(cluster: Cluster, what: str, compact: bool = False):
    """A new one-partition topic and a started transactional producer."""
    topic = name(what)
    await cluster.create_topic(topic, 1, compact=compact)
    return topic, await started(cluster, name("txn"))


async def started(cluster: Cluster, transactional_id: str):
    producer = cluster.producer(transactional_id)
    await producer.start()
    return producer


async def stop(*producers) -> None:
    for producer in producers:
        with contextlib.suppress(Exception):  # a fenced producer may not stop cleanly
            await producer.stop()


async def read(cluster: Cluster, topic: str, partition: int = 0) -> tuple[list, int]:
    """(every (key, value) a read_committed reader sees, its end offset: the last
    stable offset)."""
    reader = cluster.reader()
    await reader.start()
    tp = TopicPartition(topic, partition)
    try:
        reader.assign([tp])
        await reader.seek_to_beginning(tp)
        end = (await reader.end_offsets([tp]))[tp]
        seen = []
        for _ in range(200):
            if await reader.position(tp) >= end:
                break
            batches = await reader.getmany(tp, timeout_ms=200)
            seen += [(r.key, r.value) for r in batches.get(tp, [])]
        else:
            raise AssertionError(f"read {len(seen)} records of {topic}, never reached {end}")
        return seen, end
    finally:
        await reader.stop()


async def eventually(check, expected, timeout_s: float = 15.0):
    """`await check()` until it returns `expected`: the broker answers a commit once the
    transaction log holds it and writes its markers (and the group's offsets) just
    after; the fake does all at once. Returns the last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = await check()
        if got == expected or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)


async def committed(cluster: Cluster, group: str, tp: TopicPartition) -> int:
    admin = cluster.admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    got = offsets.get(tp)
    return -1 if got is None else got.offset


# -- the behaviours ----------------------------------------------------------------------


async def commit_makes_a_transaction_visible_at_once(cluster: Cluster) -> None:
    topic, producer = await topic_and_producer(cluster, "commit")
    try:
        await producer.begin_transaction()
        first = await send(producer, topic, 0, [(b"a", b"1"), (b"b", b"2")])
        assert first == 0
        seen, stable = await read(cluster, topic)
        assert (seen, stable) == ([], 0)  # open: nothing, the last stable offset stays
        await send(producer, topic, 0, [(b"c", b"3")])
        await producer.commit_transaction()
        # three records and the commit marker, which takes an offset
        want = ([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")], 4)
        assert await eventually(lambda: read(cluster, topic), want) == want
    finally:
        await stop(producer)


async def abort_hides_a_transaction_and_later_ones_read_on(cluster: Cluster) -> None:
    topic, producer = await topic_and_producer(cluster, "abort")
    try:
        await producer.begin_transaction()
        await send(producer, topic, 0, [(b"a", b"aborted")])
        await producer.abort_transaction()
        want = ([], 2)  # the record and its abort marker
        assert await eventually(lambda: read(cluster, topic), want) == want
        await producer.begin_transaction()
        assert await send(producer, topic, 0, [(b"a", b"kept")]) == 2
        await producer.commit_transaction()
        want = ([(b"a", b"kept")], 4)
        assert await eventually(lambda: read(cluster, topic), want) == want
    finally:
        await stop(producer)


async def the_last_stable_offset_stops_at_the_first_open_transaction(cluster: Cluster) -> None:
    topic = name("lso")
    await cluster.create_topic(topic, 1)
    slow = await started(cluster, name("slow"))
    fast = await started(cluster, name("fast"))
    try:
        await slow.begin_transaction()
        await send(slow, topic, 0, [(b"s", b"1")])  # offset 0, open
        await fast.begin_transaction()
        await send(fast, topic, 0, [(b"f", b"1")])  # offset 1
        await fast.commit_transaction()  # committed, but behind an open one
        assert await read(cluster, topic) == ([], 0)
        await slow.commit_transaction()
        want = ([(b"s", b"1"), (b"f", b"1")], 4)
        assert await eventually(lambda: read(cluster, topic), want) == want
    finally:
        await stop(slow, fast)


async def a_new_producer_of_the_same_id_fences_the_old_and_aborts_its_transaction(
    cluster: Cluster,
) -> None:
    topic = name("fence")
    group = name("group")
    await cluster.create_topic(topic, 1)
    transactional_id = name("txn")
    old = await started(cluster, transactional_id)
    new = None
    try:
        await old.begin_transaction()
        await send(old, topic, 0, [(b"k", b"old")])
        source = TopicPartition(name("input"), 0)
        await cluster.create_topic(source.topic, 1)
        await old.send_offsets_to_transaction({source: OffsetAndMetadata(10, "")}, group)
        new = await started(cluster, transactional_id)  # aborts what the old one had open
        assert await eventually(lambda: read(cluster, topic), ([], 2)) == ([], 2)
        with pytest.raises(ProducerFenced):
            await old.commit_transaction()
        assert await read(cluster, topic) == ([], 2)
        assert await committed(cluster, group, source) == -1  # its offsets went with it
        await new.begin_transaction()
        await send(new, topic, 0, [(b"k", b"new")])
        await new.commit_transaction()
        want = ([(b"k", b"new")], 4)
        assert await eventually(lambda: read(cluster, topic), want) == want
        assert await committed(cluster, group, source) == -1
    finally:
        await stop(old, *([new] if new else []))


async def offsets_sent_in_a_transaction_commit_and_abort_with_it(cluster: Cluster) -> None:
    topic = name("offsets")
    group = name("group")
    await cluster.create_topic(topic, 1)
    source = TopicPartition(name("input"), 0)
    await cluster.create_topic(source.topic, 1)
    producer = await started(cluster, name("txn"))
    try:
        await producer.begin_transaction()
        await send(producer, topic, 0, [(b"k", b"v")])
        await producer.send_offsets_to_transaction({source: OffsetAndMetadata(5, "m")}, group)
        assert await committed(cluster, group, source) == -1  # not before the commit
        await producer.commit_transaction()
        assert await eventually(lambda: committed(cluster, group, source), 5) == 5
        await producer.begin_transaction()
        await producer.send_offsets_to_transaction({source: OffsetAndMetadata(9, "")}, group)
        await producer.abort_transaction()
        await producer.begin_transaction()  # a later transaction: the abort has completed
        await producer.send_offsets_to_transaction({source: OffsetAndMetadata(7, "")}, group)
        await producer.commit_transaction()
        assert await eventually(lambda: committed(cluster, group, source), 7) == 7
    finally:
        await stop(producer)


async def compaction_keeps_the_newest_committed_value_of_each_key(cluster: Cluster) -> None:
    """Aborted values never count; a tombstone (value None) is kept as the newest value
    of its key (the broker removes tombstones only delete.retention.ms, a day by
    default, after compacting them)."""
    topic, producer = await topic_and_producer(cluster, "compact", compact=True)
    try:
        for n in range(3):
            await producer.begin_transaction()
            await send(producer, topic, 0, [(b"a", b"a%d" % n), (b"b", b"b%d" % n)])
            await producer.commit_transaction()
        await producer.begin_transaction()
        await send(producer, topic, 0, [(b"a", b"aborted")])
        await producer.abort_transaction()
        await producer.begin_transaction()
        await send(producer, topic, 0, [(b"b", None), (b"c", b"c0")])
        await producer.commit_transaction()
    finally:
        await stop(producer)
    expect = [(b"a", b"a2"), (b"b", None), (b"c", b"c0")]
    seen = await cluster.compacted(topic, 0, expect)
    assert sorted(seen, key=lambda kv: kv[0]) == expect


BEHAVIOURS = [
    commit_makes_a_transaction_visible_at_once,
    abort_hides_a_transaction_and_later_ones_read_on,
    the_last_stable_offset_stops_at_the_first_open_transaction,
    a_new_producer_of_the_same_id_fences_the_old_and_aborts_its_transaction,
    offsets_sent_in_a_transaction_commit_and_abort_with_it,
    compaction_keeps_the_newest_committed_value_of_each_key,
]
