"""MergeProcessor with a stand-in table and sink: restore off the event loop, final
rows kept until PostgreSQL confirms them, and no stale state after a rebalance."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

from app.stateful.processor import MergeProcessor
from app.stateful.stall import StallGuard
from app.wire import WatermarkMark, encode_events, encode_mark
from tables.sessions import ENDED, TIMED_OUT, SessionRow
from tests.unit.app.stateful.support import RecordingTable

MIN = 60_000
TIMEOUT = 15 * MIN
T = 1_769_679_060_000
SETTINGS = SimpleNamespace(session_timeout_ms=15 * MIN)


class Message:
    def __init__(self, partition: int, offset: int, value: bytes) -> None:
        self.partition, self.offset, self.value = partition, offset, value
        self.refs = 0

    def incref(self) -> None:
        self.refs += 1


class Event:
    def __init__(self, message: Message) -> None:
        self.message = message

    def ack(self) -> None:
        self.message.refs -= 1


class Sink:
    """Records what the processor hands to PostgreSQL; confirms what the test says."""

    def __init__(self) -> None:
        self.added: list[tuple[int, object, int]] = []
        self.confirmed: dict[int, int] = {}

    def add(self, partition: int, changes, batch: int) -> None:
        self.added.append((partition, changes, batch))

    def assign(self, partitions: set[int], generation: int) -> None:
        pass

    def revoke(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.confirmed.pop(partition, None)

    def sessions(self) -> dict:
        out = {}
        for _, changes, _ in self.added:
            out.update(changes.sessions)
        return out


class Input:
    """Records of user-keyed partition 0, numbered in order."""

    def __init__(self) -> None:
        self.offset = 0
        self.source_offset = 0

    def _next(self, value: bytes) -> Event:
        event = Event(Message(0, self.offset, value))
        self.offset += 1
        return event

    def events(self, *events: tuple[int, str, str]) -> Event:
        rows = []
        for t, user, kind in events:
            rows.append(
                (0, self.source_offset, t, user, kind, "/a" if kind == "page_view" else None)
            )
            self.source_offset += 1
        return self._next(encode_events(rows))

    def mark(self, watermark: int) -> Event:
        return self._next(encode_mark(WatermarkMark(0, 1, watermark, False)))


def processor(table: RecordingTable, sink: Sink) -> MergeProcessor:
    merge = MergeProcessor(SETTINGS, table, sink, StallGuard(10.0))
    merge.assign({0}, 1)
    return merge


class SlowTable(RecordingTable):
    """Listing the keys takes `seconds`, as a partition of 100k users does."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def items(self):
        time.sleep(self.seconds)
        return list(super().items())


async def test_restoring_a_partition_leaves_the_event_loop_running():
    table = SlowTable(0.5)
    merge = processor(table, Sink())
    gaps = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    await merge.handle([Input().events((T, "u1", "page_view"))])
    await asyncio.sleep(0.05)  # the ticker measures the gap the restore left, if any
    ticker.cancel()
    assert 0 in merge.parts
    assert max(gaps) < 0.25, f"the event loop stood still for {max(gaps):.2f}s"


async def test_final_rows_are_sent_again_after_a_restart_until_postgres_has_them():
    table, source = RecordingTable(), Input()
    sink = Sink()
    merge = processor(table, sink)
    await merge.handle(
        [
            source.events((T, "u1", "session_start"), (T + 1_000, "u1", "session_end")),
            source.mark(T + 7 * MIN),
        ]
    )
    ended = {("u1", T): SessionRow("u1", T, T + 1_000, ENDED)}
    assert sink.sessions() == ended
    assert "u1" not in merge.parts[0].users  # the aggregator let go of it

    # a restart before PostgreSQL confirmed: the row comes back from state
    sink = Sink()
    merge = processor(table, sink)
    await merge.handle([source.mark(T + 8 * MIN)])
    assert sink.sessions() == ended
    restored_batch = sink.added[0][2]

    # confirmed: the next batch deletes it from state, and a restart sends it no more
    sink.confirmed[0] = restored_batch
    await merge.handle([source.mark(T + 9 * MIN)])
    sink = Sink()
    merge = processor(table, sink)
    await merge.handle([source.mark(T + 10 * MIN)])
    assert sink.sessions() == {}


class BlockingTable(RecordingTable):
    """Listing the keys waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.listing = threading.Event()
        self.go = threading.Event()

    def items(self):
        self.listing.set()
        self.go.wait(5)
        return list(super().items())


async def test_state_read_across_a_rebalance_is_not_used_and_the_records_are_left():
    table = BlockingTable()
    merge = processor(table, Sink())
    event = Input().events((T, "u1", "page_view"))
    handling = asyncio.create_task(merge.handle([event]))
    await asyncio.to_thread(table.listing.wait, 5)
    merge.revoke({0})
    merge.assign({0}, 1)
    table.go.set()
    await handling
    assert merge.parts == {}  # restored anew with the next records
    assert event.message.refs == 1  # not acknowledged: read again from the committed offset


class SlowChangelog(RecordingTable):
    """Changelog sends that land when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.sends: list[asyncio.Future] = []

    def sent(self):
        future = asyncio.get_running_loop().create_future()
        self.sends.append(future)
        return future


async def test_records_are_acknowledged_only_once_their_batch_is_in_the_changelog():
    table = SlowChangelog()
    merge = processor(table, Sink())
    event = Input().events((T, "u1", "page_view"))
    await merge.handle([event])
    assert event.message.refs == 1  # Faust may not commit its offset yet
    for future in table.sends:
        future.set_result(None)
    await asyncio.sleep(0)
    assert event.message.refs == 0

    failed = Input().events((T, "u2", "page_view"))
    failed.message.offset = 5
    await merge.handle([failed])
    table.sends[-1].set_exception(OSError("broker gone"))
    await asyncio.sleep(0)
    assert failed.message.refs == 1  # never acknowledged: read again after a restart


async def test_confirming_the_rows_sent_after_a_restore_does_not_release_later_ones():
    """The rows a restore sends again and the first batch after it are numbered apart:
    PostgreSQL confirming the first must not drop the second's final rows unwritten."""
    table, source = RecordingTable(), Input()
    merge = processor(table, Sink())
    await merge.handle([source.events((T, "u1", "session_start")), source.mark(T + 1)])

    sink = Sink()
    merge = processor(table, sink)
    await merge.handle([source.mark(T + TIMEOUT + 1)])  # restore, then u1 times out
    restore_batch = sink.added[0][2]  # the open rows, then the outbox, then the batch
    _, changes, first_batch = sink.added[2]
    timed_out = {("u1", T): SessionRow("u1", T, T, TIMED_OUT)}
    assert changes.sessions == timed_out and first_batch > restore_batch
    sink.confirmed[0] = restore_batch  # only the restore's rows are in PostgreSQL
    await merge.handle([source.mark(T + TIMEOUT + 2)])

    sink = Sink()
    merge = processor(table, sink)
    await merge.handle([source.mark(T + TIMEOUT + 3)])
    assert sink.sessions() == timed_out  # still held, so sent again
