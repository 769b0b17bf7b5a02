"""BatchStore: a crash after any prefix of a batch's writes loads as the last whole batch."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace

import pytest

from app.stateful.store import BatchStore
from tests.unit.app.stateful.support import Event, RecordingTable, replay


def random_changes(rng: random.Random) -> dict:
    """One batch: a few of eight keys set, a quarter of them deleted."""
    changes = {}
    for _ in range(rng.randint(1, 6)):
        name = f"k{rng.randrange(8)}"
        changes[name] = None if rng.random() < 0.25 else rng.randrange(1000)
    return changes


def apply(state: dict, changes: dict) -> dict:
    for name, value in changes.items():
        if value is None:
            state.pop(name, None)
        else:
            state[name] = value
    return dict(state)


def test_every_prefix_of_the_writes_loads_as_a_whole_batch():
    rng = random.Random(3)
    table = RecordingTable()
    store = BatchStore(table)
    store.load(0)
    store.own(0, generation=1)
    states = [({}, None)]  # state and commit after each whole batch
    state: dict = {}
    for batch in range(1, 40):
        changes = random_changes(rng)
        store.write(0, Event(), changes, {"o": batch})
        states.append((apply(state, changes), {"o": batch}))

    commits_seen = 0
    for cut in range(len(table.log) + 1):
        prefix = table.log[:cut]
        commits_seen = sum(1 for key, _ in prefix if key.endswith(b"~commit"))
        loaded_commit, loaded = BatchStore(replay(prefix)).load(0)
        want_state, want_commit = states[commits_seen]
        assert (loaded, loaded_commit) == (want_state, want_commit), f"cut at {cut}"


@pytest.mark.parametrize("crash_twice", [False, True])
def test_writing_on_after_a_half_batch_repairs_its_leftovers(crash_twice):
    table = RecordingTable()
    store = BatchStore(table)
    store.load(0)
    store.own(0, generation=1)
    store.write(0, Event(), {"a": 1, "b": 1}, {"o": 1})
    whole = len(table.log)
    store.write(0, Event(), {"a": 2, "b": 2, "c": 2}, {"o": 2})
    half = replay(table.log[: whole + 2])  # a=2 and b=2 written, no commit

    again = BatchStore(half)
    assert again.load(0) == ({"o": 1}, {"a": 1, "b": 1})
    again.own(0, generation=2)
    if crash_twice:  # the retry of batch 2 writes only "c" and dies before its commit
        again.write(0, Event(), {"c": 3}, {"o": 2})
        retry_without_commit = half.log[:-1]
        half = replay([*table.log[: whole + 2], *retry_without_commit])
        again = BatchStore(half)
        assert again.load(0) == ({"o": 1}, {"a": 1, "b": 1})
        again.own(0, generation=3)
    again.write(0, Event(), {"c": 3}, {"o": 2})
    assert BatchStore(half).load(0) == ({"o": 2}, {"a": 1, "b": 1, "c": 3})


class SlowChangelogTable(RecordingTable):
    """Changelog records reach Kafka one per event-loop turn, and only while the writer
    waits; remembers how many were in Kafka when each write was made."""

    def __init__(self) -> None:
        super().__init__()
        self.unsent: list[asyncio.Future] = []
        self.in_kafka = 0
        self.in_kafka_at_write: list[int] = []

    def send_changelog(self, partition, key, value):
        self.in_kafka_at_write.append(self.in_kafka)
        return super().send_changelog(partition, key, value)

    def sent(self):
        fut = asyncio.get_running_loop().create_future()
        self.unsent.append(fut)
        return fut

    async def produce(self) -> None:
        while True:
            await asyncio.sleep(0)
            if self.unsent:
                self.unsent.pop(0).set_result(None)
                self.in_kafka += 1


def faust_restart(log, written: int, in_kafka: int, acknowledged: int) -> RecordingTable:
    """What a restarted Faust worker holds: its local RocksDB (the first `written` writes)
    with the changelog records after the last acknowledged one replayed over it."""
    return replay(log[acknowledged:in_kafka], onto=replay(log[:written]))


async def test_a_restart_on_local_state_loads_the_batch_its_commit_names():
    rng = random.Random(3)
    table = SlowChangelogTable()
    store = BatchStore(table)
    store.load(0)
    store.own(0, generation=1)
    states = {0: {}}  # input offset -> state after the batch that ends there
    state: dict = {}
    producer = asyncio.create_task(table.produce())
    for batch in range(1, 30):
        changes = random_changes(rng)
        await store.landed([0])
        store.write(0, Event(), changes, {"o": batch})
        states[batch] = apply(state, changes)
    producer.cancel()

    log, checked = table.log, 0
    for written in range(len(log) + 1):  # SIGKILL after this many local writes
        least = table.in_kafka_at_write[written - 1] if written else 0
        for in_kafka in range(least, written + 1):
            for acknowledged in range(in_kafka + 1):
                restarted = faust_restart(log, written, in_kafka, acknowledged)
                commit, loaded = BatchStore(restarted).load(0)
                offset = commit["o"] if commit else 0
                assert loaded == states[offset], (written, in_kafka, acknowledged)
                checked += 1
    assert checked > 10_000


class Landed:
    def __init__(self, offset: int) -> None:
        self.metadata = SimpleNamespace(offset=offset, topic_partition=("changelog", 0))

    def cancelled(self) -> bool:
        return False

    def exception(self):
        return None

    def result(self):
        return self.metadata


def test_the_persisted_offset_stops_at_another_writers_records():
    """A frozen worker's late records land between ours: a restore must read them (and
    skip them, fenced_store.py), and the records after them, so it starts before."""
    table = RecordingTable()
    persisted: list[int] = []
    table.data.persisted_offset = lambda tp: 9
    table.data.set_persisted_offset = lambda tp, offset: persisted.append(offset)
    table.changelog_topic.get_topic_name = lambda: "changelog"
    store = BatchStore(table)
    store.load(0)
    assert store.own(0, generation=4) == (10, 4)
    on_sent = store._owners[0].on_sent
    for offset in (10, 11, 14, 15):  # 12 and 13 are another writer's
        on_sent(Landed(offset))
    assert persisted == [10, 11]
