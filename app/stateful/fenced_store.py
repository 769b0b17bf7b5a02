"""Faust's RocksDB store, replaying only the changelog records of each partition's
current writer.

Faust writes a table's changelog outside any transaction, so records a worker had in
flight when it froze land after those of the worker that took its partition over.
Every record the stateful stage writes carries its writer's token in a header:
(changelog position at which the writer took the partition over, consumer-group
generation). Tokens only grow from one owner to the next, so in log order a record
whose token is older than one already seen comes from a writer that had lost the
partition, and the replay skips it. The newest token seen is kept in the partition's
database (WRITER_KEY), so a replay that starts part way keeps filtering.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from faust.stores import rocksdb

WRITER_HEADER = "writer"
WRITER_KEY = b"__pipeline_writer__"
STORE_SCHEME = "pipeline-rocksdb"

Token = tuple[int, int]  # (changelog offset the ownership starts at, group generation)


def encode_token(token: Token) -> bytes:
    return b"%d.%d" % token


def decode_token(raw: bytes | None) -> Token | None:
    if not raw:
        return None
    start, _, generation = raw.partition(b".")
    return int(start), int(generation)


def token_of(headers: Any) -> Token | None:
    """The writer token in a record's headers (a mapping or (name, value) pairs)."""
    if not headers:
        return None
    items = headers.items() if hasattr(headers, "items") else headers
    for name, value in items:
        if name == WRITER_HEADER:
            return decode_token(value)
    return None


def current_writer_records(events: Iterable, newest: Callable[[int], Token | None], seen: dict):
    """The events of `events` not written by a writer that had lost its partition.

    `newest(partition)` is the newest token seen before this batch; `seen` collects the
    newest token per partition after it. Records without a token (none of ours) pass.
    """
    kept = []
    skipped = 0
    for event in events:
        message = event.message
        token = token_of(message.headers)
        if token is None:
            kept.append(event)
            continue
        partition = message.partition
        if partition not in seen:
            seen[partition] = newest(partition)
        best = seen[partition]
        if best is not None and token < best:
            skipped += 1
            continue
        seen[partition] = token
        kept.append(event)
    return kept, skipped


class FencedStore(rocksdb.Store):
    skipped = 0  # changelog records of writers that had lost their partition

    def writer_token(self, partition: int) -> Token | None:
        return decode_token(self._db_for_partition(partition).get(WRITER_KEY))

    def apply_changelog_batch(
        self,
        batch: Iterable,
        to_key: Callable[[Any], Any],
        to_value: Callable[[Any], Any],
    ) -> None:
        events = list(batch)
        seen: dict[int, Token | None] = {}
        kept, skipped = current_writer_records(events, self.writer_token, seen)
        super().apply_changelog_batch(kept, to_key, to_value)
        for partition, token in seen.items():
            if token is not None:
                self._db_for_partition(partition).put(WRITER_KEY, encode_token(token))
        if skipped:
            self.skipped += skipped
            self.log.warning(
                "skipped %d changelog records of a worker that had lost the partition", skipped
            )
        # the skipped records are read: a later replay need not read them again
        offsets: dict = {}
        for event in events:
            tp = event.message.tp
            offsets[tp] = max(event.message.offset, offsets.get(tp, -1))
        for tp, offset in offsets.items():
            self.set_persisted_offset(tp, offset)
