"""`python -m bench.variant NAME -A app worker ...`: the worker with one delivery
mechanism taken out, to measure what that mechanism costs in throughput.

Bench-only. Each variant is unsafe in the way its name says; none is reachable from the
worker's own settings.
"""

from __future__ import annotations

import asyncio
import sys
import time
import weakref

import orjson

from app import batch_store, ingest
from app.sinks import lake

_background: set[asyncio.Task] = set()


def producer_without_idempotence() -> None:
    """Enriched, user-keyed and dead-letter records with acks=1 and no idempotence."""
    start = ingest.IngestProcessor.start

    async def patched(self, **options):
        await start(self, enable_idempotence=False, acks=1, **options)

    ingest.IngestProcessor.start = patched


def ack_before_durable() -> None:
    """Offsets acknowledged at the flush cut; the lake write and the delivery wait run
    behind it, so a commit can pass records that are in neither the lake nor Kafka."""

    async def flush(self):
        async with self.flush_lock:
            async with self.process_lock:
                buffers = self.buffer.take()
                held, self.held = self.held, {}
                clocks = {
                    p: self.sources[p].clock.stream_time for p in buffers if p in self.sources
                }
                self.last_flush = time.monotonic()
                inflight = await self.sender.send_and_detach() if self.sender else []
            for messages in held.values():
                for msg in messages:
                    msg.ack(self.consumer)

        async def behind():
            await asyncio.gather(*inflight)
            await asyncio.to_thread(self._write, buffers, clocks)

        task = asyncio.ensure_future(behind())
        _background.add(task)
        task.add_done_callback(_background.discard)

    ingest.IngestProcessor.flush = flush


def no_lake() -> None:
    """No Parquet written at all: the lake's own cost, for comparison."""
    lake.write_partition = lambda *args, **kwargs: None


def plain_state_writes() -> None:
    """State keys written as their new value only, without the old value that makes a
    half-written batch recoverable (the commit record stays, for the input offset)."""

    def write(self, partition, event, changes, commit):
        token = batch_store._current_event.set(weakref.ref(event))
        try:
            for name, new in changes.items():
                key = self._key(partition, name)
                if new is None:
                    self.table.pop(key, None)
                else:
                    self.table[key] = orjson.dumps(new)
            self.table[self._key(partition, batch_store.COMMIT)] = orjson.dumps(
                [0, commit], option=orjson.OPT_NON_STR_KEYS
            )
        finally:
            batch_store._current_event.reset(token)

    batch_store.BatchStore.write = write


VARIANTS = {
    "as-shipped": lambda: None,
    "producer-without-idempotence": producer_without_idempotence,
    "ack-before-durable": ack_before_durable,
    "plain-state-writes": plain_state_writes,
    "no-lake": no_lake,
}


def main() -> None:
    name, args = sys.argv[1], sys.argv[2:]
    VARIANTS[name]()
    from faust.cli.faust import cli

    cli(args=args, prog_name="faust")


if __name__ == "__main__":
    main()
