"""A restore read in chunks (app/stateful/restore.py) that is cut short: the local store
holds whole chunks with the position after each, and the next restore reads only the
rest, to the same state as one that never stopped."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from app.stateful import changelog, restore
from app.stateful.state import LocalState
from tests.unit.fake_kafka import FakeKafka

TOPIC = "t-store-changelog"
TP = TopicPartition(TOPIC, 0)
CHUNK = 10  # WRITE_EVERY in these tests


class Crash(BaseException):
    """The process dies here (BaseException: nothing in the restore catches it)."""


def changelog_of(records: int) -> tuple[FakeKafka, int]:
    """A changelog of user keys, their updates and deletes, and a position record after
    every few (as commits write them); (kafka, its end)."""
    kafka = FakeKafka()
    kafka.create_topic(TOPIC, 1, compact=True)
    for n in range(records):
        if n % 7 == 6:
            kafka.produce(TOPIC, 0, changelog.encode({"o": n}), key=changelog.POSITION.encode())
        elif n % 11 == 10:
            kafka.produce(TOPIC, 0, None, key=b"u|%d" % (n % 13))  # a user gone
        else:
            kafka.produce(TOPIC, 0, changelog.encode([n]), key=b"u|%d" % (n % 13))
    return kafka, kafka.highwater(TOPIC, 0)


def contents(local: LocalState) -> tuple:
    position = local.position
    return dict(local.items()), position.changelog_next, position.input_next


async def restored(kafka: FakeKafka, path) -> tuple[LocalState, int, int]:
    reader = kafka.reader()
    return await restore.catch_up(LocalState(path), reader, TP)


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(restore, "WRITE_EVERY", CHUNK)


@pytest.mark.parametrize("crash_at_write", [1, 2, 5])
async def test_a_restore_cut_short_resumes_from_its_last_whole_chunk(
    tmp_path, monkeypatch, crash_at_write
):
    kafka, end = changelog_of(73)
    whole, next_offset, read = await restored(kafka, tmp_path / "whole")
    assert (next_offset, read) == (end, end) and whole.position.input_next == 69
    expected = contents(whole)
    whole.close()

    writes = []
    real_write = LocalState.write

    def write(self, records, changelog_next, input_next):
        writes.append(changelog_next)
        if len(writes) == crash_at_write:
            raise Crash
        return real_write(self, records, changelog_next, input_next)

    path = tmp_path / "cut"
    monkeypatch.setattr(LocalState, "write", write)
    local = LocalState(path)
    with pytest.raises(Crash):
        await restore.catch_up(local, kafka.reader(), TP)
    local.close()  # what was written is on disk; the rest never was
    monkeypatch.setattr(LocalState, "write", real_write)

    again = LocalState(path)
    held = 0 if crash_at_write == 1 else again.position.changelog_next
    assert held == (0 if crash_at_write == 1 else writes[crash_at_write - 2])
    again, next_offset, read = await restore.catch_up(again, kafka.reader(), TP)
    assert (next_offset, read) == (end, end - held)  # only what it lacked
    assert contents(again) == expected
    again.close()


async def test_each_chunk_is_written_with_the_position_after_it(tmp_path, monkeypatch):
    kafka, _ = changelog_of(35)
    positions = []
    real_write = LocalState.write

    def write(self, records, changelog_next, input_next):
        positions.append((len(records), changelog_next, input_next))
        return real_write(self, records, changelog_next, input_next)

    monkeypatch.setattr(LocalState, "write", write)
    local, _, _ = await restored(kafka, tmp_path)
    # chunks of CHUNK records, each with the input position of the last one it holds
    assert positions == [(10, 10, 6), (10, 20, 13), (10, 30, 27), (5, 35, 34)]
    local.close()
