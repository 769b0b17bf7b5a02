"""Restoring one user-keyed partition: the local store brought up to the end of its
changelog, then the aggregator and outbox built from it.

Runs after the partition's checkpoint is opened (which fenced any previous owner and
ended its open transaction), so the changelog's end, read read_committed, is final.
The heavy parts (RocksDB writes, the scan that builds 100k users) run in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from aiokafka import TopicPartition

from app.stateful import changelog
from app.stateful.outbox import Outbox, split_outbox
from app.stateful.partition import StatefulPartition
from app.stateful.state import LocalState
from tables.aggregator import PartitionAggregator

log = logging.getLogger(__name__)
# Compaction removes tombstones delete.retention.ms (Kafka's default: a day) after it
# compacts them; local state older than this may still hold a key they deleted.
LOCAL_STATE_MAX_AGE_S = 12 * 3600
WRITE_EVERY = 20_000  # changelog records per local write batch while restoring


async def in_thread(fn, *args, discard=None):
    """`fn(*args)` in a thread; cancelled, it lets the thread finish first (the store it
    works on is closed by whoever handles the cancel, never under the thread) and hands
    what it made to `discard`."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            made = await work
            if discard is not None:
                discard(made)
        raise


async def catch_up(local: LocalState, reader, tp: TopicPartition) -> tuple[LocalState, int, int]:
    """Apply the changelog from where `local` stands to its end; (local, next changelog
    offset, records read). `reader` is a consumer without a group, read_committed. A
    store it rebuilt is closed again if it then fails or is cancelled."""
    given = local
    end = (await reader.end_offsets([tp]))[tp]
    position = local.position
    if position is not None and position.changelog_next > end:
        # the changelog is not the one this state came from
        log.warning(
            "stateful: local state of partition %d is ahead of its changelog (%d > %d): "
            "another cluster's, or the topic was recreated; rebuilding it",
            tp.partition,
            position.changelog_next,
            end,
        )
        local, position = await in_thread(local.wipe), None
    elif position is not None and time.time() - position.written_at > LOCAL_STATE_MAX_AGE_S:
        log.info(
            "stateful: local state of partition %d is %.0f h old; rebuilding it from the "
            "changelog (tombstones older than a day may be gone from it)",
            tp.partition,
            (time.time() - position.written_at) / 3600,
        )
        local, position = await in_thread(local.wipe), None
    start = 0 if position is None else position.changelog_next
    input_next = -1 if position is None else position.input_next
    reader.assign([tp])
    reader.seek(tp, start)
    read, next_offset, pending = 0, start, []
    position_key = changelog.POSITION.encode()
    try:
        while next_offset < end:
            batches = await reader.getmany(tp, timeout_ms=200, max_records=WRITE_EVERY)
            for record in batches.get(tp, ()):
                pending.append((record.key, record.value))
                if record.key == position_key:
                    input_next = changelog.decode(record.value)["o"]
            read += sum(len(b) for b in batches.values())
            next_offset = await reader.position(tp)
            if len(pending) >= WRITE_EVERY or next_offset >= end:
                written, pending = pending, []
                await in_thread(local.write, written, next_offset, input_next)
    except BaseException:
        if local is not given:  # rebuilt here: nobody else knows of it
            with contextlib.suppress(Exception):
                local.close()
        raise
    finally:
        # no fetch left waiting on the broker between restores (the next restore's
        # requests would queue behind it); unsubscribing races aiokafka's fetcher
        reader.pause(tp)
    return local, next_offset, read


def build(
    local: LocalState, timeout_ms: int, wall_s: float
) -> tuple[PartitionAggregator, Outbox, Any]:
    """The aggregator and outbox held in `local`, and its position record (None when it
    holds none). Reads the whole partition: run it in a thread."""
    values: dict[str, Any] = {}
    for key, raw in local.items():
        values[key.decode()] = changelog.decode(raw)
    position = values.pop(changelog.POSITION, None)
    held, state = split_outbox(values)
    aggregator = PartitionAggregator(timeout_ms)
    aggregator.restore(position, state, wall_s)
    outbox = Outbox()
    outbox.restore(held)
    return aggregator, outbox, position


async def restore(
    local: LocalState, reader, tp: TopicPartition, checkpoint, timeout_ms: int
) -> StatefulPartition:
    """The partition as its local store and changelog hold it; its `input_next` is None
    when they hold no state of it yet."""
    started = time.monotonic()
    given = local
    local, changelog_next, read = await catch_up(local, reader, tp)
    try:
        aggregator, outbox, position = await in_thread(build, local, timeout_ms, time.monotonic())
    except BaseException:
        if local is not given:  # rebuilt here: nobody else knows of it
            with contextlib.suppress(Exception):
                local.close()
        raise
    input_next = None if position is None else position["o"]
    seconds = time.monotonic() - started
    return StatefulPartition(
        tp.partition, aggregator, outbox, local, checkpoint, input_next, changelog_next, read,
        seconds,
    )  # fmt: skip
