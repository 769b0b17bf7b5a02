"""An in-memory Kafka for unit tests of the stages and their commit protocol.

It keeps what the stages depend on and nothing else: partition logs with offsets,
transactions (open, committed, aborted; their markers take an offset, as in Kafka),
producer epochs per transactional id (a newer `start` fences the older producer and
aborts its open transaction), consumer-group offsets committed inside transactions,
read_committed visibility up to the last stable offset, and compaction. Consumers
are assigned partitions by the test (`FakeKafka.assign`), which runs the stage's
rebalance listener as aiokafka would.

tests/kafka_contract.py holds it to the real broker (run against both). One known
difference stays: a commit here is visible the moment `commit_transaction` returns;
the broker answers once its transaction log holds the commit and writes the markers
(and the group's offsets) a moment later, so a reader right after may not see it yet.
`FakeKafka.offsets_late` makes the fake apply a commit's offsets late too: pending
until that many stable offset fetches have been answered UNSTABLE_OFFSET_COMMIT.

Every step a commit takes can be made to fail (`FakeKafka.fail`): `init`, `send`
(the broker refuses a batch, retriably), `offsets`, `commit` (the request fails, nothing
happens), `commit-reply` (the commit happens, its reply is lost), and `hang-send`
(a send that never completes). `FakeKafka.hold("commit")` stops the next commit
in flight until the test lets it go, to interleave something with it (a rebalance,
say). Mirrors the aiokafka calls the stages make; what the
stages do not call is not here.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    NotEnoughReplicasError,
    ProducerFenced,
    TopicAlreadyExistsError,
)
from aiokafka.structs import OffsetAndMetadata

from app.aiokafka_internals import (
    OFFSET_FETCH_KEY,
    OffsetFetchRequest_v7,
    OffsetFetchResponse_v7,
)

COORDINATOR_LOAD_IN_PROGRESS = 14
UNSTABLE_OFFSET_COMMIT = 88


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list = field(default_factory=list)
    timestamp: int = 0
    txn: Txn | None = None
    control: bool = False

    @property
    def committed(self) -> bool:
        return self.txn is None or self.txn.state == "committed"


@dataclass
class Txn:
    transactional_id: str
    epoch: int
    state: str = "open"  # open, committed, aborted
    records: list[FakeRecord] = field(default_factory=list)
    offsets: dict[tuple[str, TopicPartition], OffsetAndMetadata] = field(default_factory=dict)


@dataclass
class Metadata:
    topic: str
    partition: int
    offset: int


@dataclass
class Hold:
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


class FakeKafka:
    def __init__(self) -> None:
        self.logs: dict[tuple[str, int], list[FakeRecord]] = {}
        self.compacted: set[str] = set()
        self.groups: dict[str, dict[TopicPartition, OffsetAndMetadata]] = defaultdict(dict)
        self.epochs: dict[str, int] = defaultdict(int)
        self.generations: dict[str, int] = defaultdict(int)  # per consumer group
        self.open_txns: dict[str, Txn] = {}
        self.faults: dict[str, list[int]] = {}  # step -> [calls to let pass, calls to fail]
        self.commits = 0
        self.clock = itertools.count(1)
        # every topic's max.message.bytes: a larger record is refused, as the broker does
        self.max_message_bytes = 1_048_588
        self.max_batch_bytes = 1 << 20  # as KafkaClients: the stage may lower it
        self.holds: dict[str, Hold] = {}
        # a committed transaction's offsets, not applied yet: (group, tp) -> (offset,
        # stable fetches left to answer UNSTABLE_OFFSET_COMMIT)
        self.offsets_late = 0
        self.pending_offsets: dict[tuple[str, TopicPartition], list] = {}
        self.unstable_answers = 0  # UNSTABLE_OFFSET_COMMIT answers given

    # -- the broker ----------------------------------------------------------

    def create_topic(self, name: str, partitions: int, compact: bool = False) -> None:
        for p in range(partitions):
            self.logs.setdefault((name, p), [])
        if compact:
            self.compacted.add(name)

    def partitions(self, topic: str) -> list[int]:
        return sorted(p for t, p in self.logs if t == topic)

    def fail(self, step: str, times: int = 1, after: int = 0) -> None:
        """Make `step` fail `times` times, once it has passed `after` more times."""
        self.faults[step] = [after, times]

    def hold(self, step: str) -> Hold:
        """Stop the next `step` ("commit") in flight: `await hold.reached.wait()`, then
        `hold.release.set()` lets it go on."""
        self.holds[step] = Hold()
        return self.holds[step]

    async def _hold(self, step: str) -> None:
        hold = self.holds.pop(step, None)
        if hold is not None:
            hold.reached.set()
            await hold.release.wait()

    def _fault(self, step: str) -> bool:
        plan = self.faults.get(step)
        if plan is None:
            return False
        if plan[0] > 0:
            plan[0] -= 1
            return False
        if plan[1] > 0:
            plan[1] -= 1
            return True
        return False

    def append(self, topic: str, partition: int, key, value, headers=None, txn=None) -> int:
        log = self.logs[(topic, partition)]
        record = FakeRecord(
            topic, partition, len(log), key, value, list(headers or []), next(self.clock), txn
        )
        log.append(record)
        if txn is not None:
            txn.records.append(record)
        return record.offset

    def produce(self, topic: str, partition: int, value: bytes, key: bytes | None = None) -> int:
        """A plain (non-transactional) record, as a user's producer sends input."""
        return self.append(topic, partition, key, value)

    def _end(self, txn: Txn, state: str) -> None:
        txn.state = state
        touched = sorted({(r.topic, r.partition) for r in txn.records})
        for topic, partition in touched:
            log = self.logs[(topic, partition)]
            log.append(FakeRecord(topic, partition, len(log), None, None, txn=txn, control=True))
        if state == "committed":
            self.commits += 1
            for (group, tp), offset in txn.offsets.items():
                if self.offsets_late:
                    self.pending_offsets[(group, tp)] = [offset, self.offsets_late]
                else:
                    self.groups[group][tp] = offset
        self.open_txns.pop(txn.transactional_id, None)

    def lso(self, topic: str, partition: int) -> int:
        """Last stable offset: read_committed readers see nothing at or past it."""
        for record in self.logs[(topic, partition)]:
            if record.txn is not None and record.txn.state == "open":
                return record.offset
        return len(self.logs[(topic, partition)])

    def highwater(self, topic: str, partition: int) -> int:
        return len(self.logs[(topic, partition)])

    def visible(self, topic: str, partition: int | None = None) -> list[FakeRecord]:
        """What a read_committed reader sees (every partition unless one is given)."""
        parts = self.partitions(topic) if partition is None else [partition]
        out = []
        for p in parts:
            stable = self.lso(topic, p)
            out += [
                r
                for r in self.logs[(topic, p)]
                if r.offset < stable and r.committed and not r.control
            ]
        return out

    def compact(self, topic: str) -> None:
        """Keep the newest committed record of each key (and drop aborted ones), as the
        log cleaner does below the last stable offset. A tombstone (value None) is kept
        as its key's newest record: the broker removes tombstones only
        delete.retention.ms (a day by default) after compacting them, a time this fake
        does not reach (tests/kafka_contract.py)."""
        for p in self.partitions(topic):
            log = self.logs[(topic, p)]
            stable = self.lso(topic, p)
            newest: dict[bytes, int] = {}
            for r in log:
                if r.offset < stable and r.committed and not r.control:
                    newest[r.key] = r.offset
            unstable = [r for r in log if r.offset >= stable or r.control]
            newest_values = [
                r
                for r in log
                if r.offset < stable
                and r.committed
                and not r.control
                and newest.get(r.key) == r.offset
            ]
            kept = sorted(unstable + newest_values, key=lambda r: r.offset)
            # offsets stay as they were; the gaps are what compaction leaves
            self.logs[(topic, p)] = _Sparse(kept, len(log))

    # -- clients -------------------------------------------------------------

    def producer(self, transactional_id: str) -> FakeProducer:
        return FakeProducer(self, transactional_id)

    def consumer(self, group_id: str, **options) -> FakeConsumer:
        return FakeConsumer(self, group_id)

    def reader(self) -> FakeConsumer:
        return FakeConsumer(self, None)

    def admin(self) -> FakeAdmin:
        return FakeAdmin(self)

    async def assign(self, consumer: FakeConsumer, partitions: set[int]) -> None:
        """A rebalance of `consumer`'s group gives it `partitions` of its topic."""
        await consumer.rebalance({TopicPartition(consumer.topic, p) for p in partitions})


class _Sparse(list):
    """A compacted log: records keep their offsets, `len` is the next offset."""

    def __init__(self, records: list[FakeRecord], end: int) -> None:
        super().__init__(records)
        self.end = end

    def __len__(self) -> int:
        return self.end

    def append(self, record: FakeRecord) -> None:
        record.offset = self.end
        self.end += 1
        super().append(record)


class FakeBatch:
    def __init__(self, limit: int) -> None:
        self.records: list[tuple] = []
        self.limit = limit

    def append(self, *, key, value, timestamp, headers):
        if len(self.records) >= self.limit:
            return None
        self.records.append((key, value, list(headers or [])))
        return object()

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    batch_limit = 100  # records per batch, so that a commit sends several

    def __init__(self, kafka: FakeKafka, transactional_id: str) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.epoch: int | None = None
        self.txn: Txn | None = None
        self.stopped = False

    def _check(self) -> None:
        if self.kafka.epochs[self.transactional_id] != self.epoch:
            raise ProducerFenced()

    async def start(self) -> None:
        if self.kafka._fault("init"):
            raise KafkaConnectionError("broker away (init)")
        kafka = self.kafka
        kafka.epochs[self.transactional_id] += 1
        self.epoch = kafka.epochs[self.transactional_id]
        previous = kafka.open_txns.get(self.transactional_id)
        if previous is not None:
            kafka._end(previous, "aborted")

    async def stop(self) -> None:
        self.stopped = True

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.batch_limit)

    async def begin_transaction(self) -> None:
        assert self.txn is None or self.txn.state != "open", "a transaction is open already"
        self.txn = Txn(self.transactional_id, self.epoch)

    def _join(self) -> None:
        """The broker learns of the transaction at its first send or offset commit."""
        self._check()
        self.kafka.open_txns[self.transactional_id] = self.txn

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int):
        future = asyncio.get_running_loop().create_future()
        if self.kafka._fault("hang-send"):
            return future  # never completes
        try:
            self._join()
        except ProducerFenced as exc:
            future.set_exception(exc)
            return future
        too_large = any(
            len(key or b"") + len(value or b"") + 100 > self.kafka.max_message_bytes
            for key, value, _ in batch.records
        )
        if self.kafka._fault("send"):
            future.set_exception(NotEnoughReplicasError())
            return future
        if too_large:
            future.set_exception(MessageSizeTooLargeError())
            return future
        base = None
        for key, value, headers in batch.records:
            offset = self.kafka.append(topic, partition, key, value, headers, self.txn)
            base = offset if base is None else base
        future.set_result(Metadata(topic, partition, base))
        return future

    async def send_offsets_to_transaction(self, offsets: dict, group_id: str) -> None:
        self._join()
        if self.kafka._fault("offsets"):
            raise KafkaConnectionError("broker away (offsets)")
        for tp, offset in offsets.items():
            self.txn.offsets[(group_id, tp)] = offset

    async def commit_transaction(self) -> None:
        await self.kafka._hold("commit")
        self._check()
        if self.kafka._fault("commit"):
            raise KafkaConnectionError("broker away (commit)")
        self.kafka._end(self.txn, "committed")
        if self.kafka._fault("commit-reply"):
            raise KafkaConnectionError("reply lost (commit)")

    async def abort_transaction(self) -> None:
        self._check()
        self.kafka._end(self.txn, "aborted")


class FakeConsumer:
    def __init__(self, kafka: FakeKafka, group_id: str | None) -> None:
        self.kafka = kafka
        self.group_id = group_id
        self.topic: str | None = None
        self.listener = None
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self._coordinator = SimpleNamespace(generation=0)  # aiokafka keeps it there
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def subscribe(self, topics: list[str], listener=None) -> None:
        (self.topic,) = topics
        self.listener = listener

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = {tp: 0 for tp in partitions}
        self.paused = set()

    async def rebalance(self, assigned: set[TopicPartition]) -> None:
        old = set(self.positions)
        if self.listener is not None and old:
            await self.listener.on_partitions_revoked(old)
        self.kafka.generations[self.group_id] += 1
        self._coordinator.generation = self.kafka.generations[self.group_id]
        self.positions = {}
        for tp in assigned:
            committed = self.kafka.groups[self.group_id].get(tp)
            self.positions[tp] = committed.offset if committed else 0
        self.paused &= assigned
        if self.listener is not None:
            await self.listener.on_partitions_assigned(set(assigned))

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(self.kafka.partitions(topic))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        assert tp in self.positions, f"{tp} is not assigned"
        self.positions[tp] = offset

    async def seek_to_beginning(self, *tps) -> None:
        for tp in tps:
            self.positions[tp] = 0

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return self.kafka.highwater(tp.topic, tp.partition)

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.kafka.lso(tp.topic, tp.partition)

    async def end_offsets(self, tps) -> dict[TopicPartition, int]:
        return {tp: self.kafka.lso(tp.topic, tp.partition) for tp in tps}

    async def beginning_offsets(self, tps) -> dict[TopicPartition, int]:
        out = {}
        for tp in tps:
            log = self.kafka.logs[(tp.topic, tp.partition)]
            out[tp] = log[0].offset if list.__len__(log) else len(log)
        return out

    def pause(self, *tps) -> None:
        self.paused |= set(tps)

    def resume(self, *tps) -> None:
        self.paused -= set(tps)

    async def getmany(self, *tps, timeout_ms: int = 0, max_records: int | None = None):
        out: dict[TopicPartition, list[FakeRecord]] = {}
        budget = max_records or 1 << 30
        for tp in sorted(self.positions):
            if tp in self.paused or budget <= 0:
                continue
            position = self.positions[tp]
            stable = self.kafka.lso(tp.topic, tp.partition)
            got = []
            for record in self.kafka.logs[(tp.topic, tp.partition)]:
                if record.offset < position or record.offset >= stable:
                    continue
                if len(got) >= budget:
                    break
                position = record.offset + 1
                if record.control or not record.committed:
                    continue
                got.append(record)
            if not got and position < stable:
                position = stable  # only markers, aborted records or compacted gaps
            self.positions[tp] = position
            if got:
                out[tp] = got
                budget -= len(got)
        if not out:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return out


class FakeAdmin:
    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka
        self._client = FakeClient(kafka)  # as aiokafka's: app/aiokafka_internals.py

    async def find_coordinator(self, group_id: str, coordinator_type: int = 0) -> int:
        return 0

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return sorted({t for t, _ in self.kafka.logs})

    async def create_topics(self, topics) -> None:
        existing = {t for t, _ in self.kafka.logs}
        for topic in topics:
            if topic.name in existing:
                raise TopicAlreadyExistsError()
            compact = (topic.topic_configs or {}).get("cleanup.policy") == "compact"
            self.kafka.create_topic(topic.name, topic.num_partitions, compact)

    async def describe_configs(self, resources) -> list:
        """max.message.bytes of topics, as the broker's DescribeConfigs answers it."""
        return [
            SimpleNamespace(
                resources=[
                    (0, "", 2, r.name, [("max.message.bytes", str(self.kafka.max_message_bytes))])
                    for r in resources
                ]
            )
        ]

    async def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        return [
            {"topic": t, "partitions": [{"partition": p} for p in self.kafka.partitions(t)]}
            for t in topics
        ]

    async def list_consumer_group_offsets(self, group_id: str, partitions=None):
        """As aiokafka 0.14 (OffsetFetch v3, no require_stable): partitions asked for
        and never committed come back as -1, pending offsets are not waited for; a
        group-level error (fault "offsets-loading") comes back as no partitions."""
        offsets = self.kafka.groups[group_id]
        if self.kafka._fault("offsets-loading"):
            return {}
        if partitions is None:
            return dict(offsets)
        return {tp: offsets.get(tp, OffsetAndMetadata(-1, "")) for tp in partitions}


class FakeClient:
    """The admin's AIOKafkaClient, for the one request sent through it: OffsetFetch v7.
    The request is encoded and decoded as on the wire, and so is the answer."""

    BROKER_VERSIONS = {OFFSET_FETCH_KEY: (1, 10)}  # as Kafka 4

    def __init__(self, kafka: FakeKafka) -> None:
        self.kafka = kafka

    async def send(self, node_id, request):
        sent = request.prepare(self.BROKER_VERSIONS)
        struct = type(sent).decode(sent.encode())
        response = self._answer(struct)
        return type(response).decode(response.encode())

    def _answer(self, request: OffsetFetchRequest_v7) -> OffsetFetchResponse_v7:
        kafka = self.kafka
        if kafka._fault("offsets-loading"):
            return OffsetFetchResponse_v7(0, [], COORDINATOR_LOAD_IN_PROGRESS, {})
        group = request.group_id
        opened = {key for txn in kafka.open_txns.values() for key in txn.offsets}
        topics = []
        for topic, partitions, _ in request.topics:
            answers = []
            for p in partitions:
                tp = TopicPartition(topic, p)
                pending = kafka.pending_offsets.get((group, tp))
                if request.require_stable and ((group, tp) in opened or pending is not None):
                    kafka.unstable_answers += 1
                    if pending is not None:
                        pending[1] -= 1
                        if pending[1] <= 0:  # the coordinator got to it
                            kafka.groups[group][tp] = kafka.pending_offsets.pop((group, tp))[0]
                    answers.append((p, -1, -1, None, UNSTABLE_OFFSET_COMMIT, {}))
                    continue
                mark = kafka.groups[group].get(tp)
                offset, metadata = (-1, None) if mark is None else (mark.offset, mark.metadata)
                answers.append((p, offset, -1, metadata, 0, {}))
            topics.append((topic, answers, {}))
        return OffsetFetchResponse_v7(0, topics, 0, {})
