"""All-or-nothing batches on top of a Faust table (RocksDB + Kafka changelog).

Faust writes each key to the changelog on its own, so a crash can leave half a batch
behind. Every key of one partition lives in one table, hence in one changelog
partition, where records keep their order: a batch is its key records followed by
a commit record. Each key record is `[seq, new, old, ...]`; on load a key whose seq is
newer than the last commit record reads as `old`, so the state is exactly that of
the last whole batch. The commit record also carries the input offset the batch
ended at, so the stage re-reads only what that state does not hold.

After a restart Faust keeps the local RocksDB copy, which holds every write, and
replays over it the changelog records after the last offset it saw acknowledged.
Those records are older than what RocksDB holds for any key written again since,
so the replay moves such keys back while the commit record may stay ahead. That
loads correctly only if the changelog already held every earlier batch when a
batch was written, and a key is written once per batch: `landed` waits for the
first, `write` keeps the second.

A worker that froze and lost its partitions can wake with records in flight; they
land after its successor's. So every record carries its writer's token (`own`): the
table's store skips them on replay (fenced_store.py); key records also hold the token
(`[seq, new, old, token...]`) and the commit record the token and the seq its writer
took over at, so a key a former owner wrote after that seq (its own late batch, still
in its local database when it gets the partition back) loads as `old`; and the
persisted changelog offset never moves past another writer's records (`_on_sent`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.streams import _current_event
from faust.types import TP

from app.stateful.fenced_store import WRITER_HEADER, WRITER_KEY, Token, encode_token

COMMIT = "~commit"
_DELETED = None


@dataclass
class Scan:
    partition: int
    raw_commit: bytes | None
    items: Callable[[], Iterable[tuple[bytes, bytes]]]


@dataclass
class Loaded:
    seq: int  # of the last whole batch
    commit: Any | None  # its commit payload
    values: dict[str, Any] = field(default_factory=dict)  # every live key
    # keys left by a half-written batch, with their committed value
    repairs: dict[str, Any] = field(default_factory=dict)
    committed: dict[bytes, bytes] = field(default_factory=dict)  # key -> committed JSON


@dataclass
class Ownership:
    """This worker's writing of one partition, from `own` on."""

    token: Token
    owned_from: int  # the seq of the last batch before `own`
    next_offset: int | None  # where its next record should land; None after a gap
    marked: bool = False  # the token is in the partition's local database
    on_sent: Callable | None = None  # the sends' callback (`_on_sent`)
    headers: list[tuple[str, bytes]] = field(init=False)  # every record's, built once

    def __post_init__(self) -> None:
        self.headers = [(WRITER_HEADER, encode_token(self.token))]


class BatchStore:
    def __init__(self, table) -> None:
        self.table = table
        self.seq: dict[int, int] = {}
        self._tombstones: dict[int, list[bytes]] = {}
        # keys left by a half-written batch: rewritten with their committed value next time
        self._repairs: dict[int, dict[str, Any]] = {}
        # committed value of every key as JSON, so a write needs no read of the old value
        self._committed: dict[int, dict[bytes, bytes]] = {}
        # changelog send of each partition's last commit record; sent in order after
        # the batch's key records, so once it is acknowledged the whole batch is in Kafka
        self._sent: dict[int, asyncio.Future] = {}
        self._owners: dict[int, Ownership] = {}  # partition -> this worker's writing of it

    @staticmethod
    def _key(partition: int, name: str) -> bytes:
        return f"{partition}|{name}".encode()

    def load(self, partition: int) -> tuple[Any | None, dict[str, Any]]:
        """(commit payload or None, {name: value}) as of the last whole batch.

        Reads the whole partition on the calling thread; the worker runs `read` in a
        thread instead and `adopt`s its result on the event loop.
        """
        loaded = self.read(self.prepare(partition))
        self.adopt(partition, loaded)
        return loaded.commit, loaded.values

    def prepare(self, partition: int) -> Scan:
        """What `read` needs, taken on the event loop: the commit record and a way to
        list the partition's keys that is safe in another thread."""
        raw_commit = self.table.get(self._key(partition, COMMIT))
        data = self.table.data
        open_db = getattr(data, "_db_for_partition", None)
        if open_db is None:  # not the RocksDB store: a table standing in for it
            return Scan(partition, raw_commit, self.table.items)
        # Faust's own table views walk the databases of every assigned partition
        # through dicts the event loop changes at a rebalance; one partition's RocksDB
        # database can be read from any thread.
        db = open_db(partition)
        decode_key, decode_value = data._decode_key, data._decode_value

        def items() -> Iterator[tuple[bytes, bytes]]:
            for key, value in data._visible_items(db):
                yield decode_key(key), decode_value(value)

        return Scan(partition, raw_commit, items)

    @classmethod
    def read(cls, scan: Scan) -> Loaded:
        """The partition's state as of its last whole batch; touches nothing shared, so
        it may run in a thread."""
        partition = scan.partition
        prefix = f"{partition}|".encode()
        committed_seq, commit, *writer = (
            orjson.loads(scan.raw_commit) if scan.raw_commit else (0, None)
        )
        # the last commit's writer token and the seq it took the partition over at
        owner, owned_from = (writer[:2], writer[2]) if writer else (None, 0)
        loaded = Loaded(committed_seq, commit)
        for key, raw in scan.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].decode()
            if name == COMMIT:
                continue
            seq, new, old, *by = orjson.loads(raw)
            # newer than the last whole batch, or written after its writer took the
            # partition over by a writer that had lost it (a frozen worker's late batch)
            stale = seq > committed_seq or (owner is not None and by != owner and seq > owned_from)
            value = old if stale else new
            if stale:
                loaded.repairs[name] = value
            if value is not _DELETED:
                loaded.values[name] = value
                loaded.committed[key] = orjson.dumps(value)
        return loaded

    def adopt(self, partition: int, loaded: Loaded) -> None:
        """Write on from what `read` found."""
        self.seq[partition] = loaded.seq
        self._repairs[partition] = loaded.repairs
        self._committed[partition] = loaded.committed

    async def landed(self, partitions: Iterable[int]) -> None:
        """Wait until the changelog holds the last batch written for each partition.

        Call before writing the next batch of these partitions: then local RocksDB is
        at most one batch ahead of the changelog, which is what `load` can undo after a
        crash. A failed send is not raised here (Faust logs it).
        """
        pending = [f for p in partitions if (f := self._sent.get(p)) is not None and not f.done()]
        if pending:
            await asyncio.wait(pending)

    def own(self, partition: int, generation: int) -> Token:
        """This worker writes `partition` from now on, assigned under `generation`.

        Call after the partition's state is restored: the token starts at the changelog
        position restored up to, so it is newer than any earlier writer's
        (fenced_store.py).
        """
        offset_of = getattr(self.table.data, "persisted_offset", None)
        persisted = None
        if offset_of is not None:
            persisted = offset_of(TP(self.table.changelog_topic.get_topic_name(), partition))
        start = (-1 if persisted is None else persisted) + 1
        owner = Ownership((start, generation), self.seq.get(partition, 0), start)
        owner.on_sent = self._on_sent(owner)
        self._owners[partition] = owner
        return owner.token

    def _on_sent(self, owner: Ownership):
        """Advance the partition's persisted changelog offset over this worker's own
        records only while they follow on without a gap.

        Faust moves it to the offset of every record a table sends. When records of
        another writer landed in between (a worker that had lost the partition), that
        skipped them: a later restore started past them and never read them.
        """

        def sent(future) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # Faust logs the failed send
            metadata = future.result()
            if owner.next_offset != metadata.offset:
                owner.next_offset = None  # a gap: replay from before it
                return
            owner.next_offset = metadata.offset + 1
            self.table.data.set_persisted_offset(metadata.topic_partition, metadata.offset)

        return sent

    def _send(self, partition: int, key: bytes, value: bytes | None) -> asyncio.Future:
        """One changelog record with this worker's writer token (`own`)."""
        owner = self._owners[partition]
        return self.table.changelog_topic.send_soon(
            key=key,
            value=value,
            partition=partition,
            headers=owner.headers,
            key_serializer="raw",
            value_serializer="raw",
            callback=owner.on_sent,
            eager_partitioning=True,
        )

    def write(self, partition: int, event, changes: Mapping[str, Any], commit: Any) -> None:
        """Write one batch (value None deletes) and its commit record, in that order.

        Runs in the context of `event`, a record of this partition, because Faust picks
        the RocksDB partition from the current event. Await `landed` for the partition
        first, and `own` it before its first batch.
        """
        committed = self.seq.get(partition, 0)
        seq = committed + 1
        repairs = self._repairs.pop(partition, None)
        if repairs:
            changes = {**repairs, **changes}
        token = _current_event.set(weakref.ref(event))
        try:
            local, send = self.table.data, self._send
            owner = self._owners[partition]
            writer = b"%d,%d" % owner.token
            if not owner.marked:
                owner.marked = True
                local[WRITER_KEY] = owner.headers[0][1]
            # keys deleted by the previous (now committed) batch can go for good, unless
            # this batch writes them again: two writes of a key in one batch could be
            # split by the changelog replay after a crash (see the module docstring)
            for key in self._tombstones.pop(partition, ()):
                name = key.split(b"|", 1)[1].decode()
                if changes.get(name, _DELETED) is _DELETED and key in local:
                    del local[key]
                    send(partition, key, None)
            deleted = []
            known = self._committed.setdefault(partition, {})
            for name, new in changes.items():
                key = self._key(partition, name)
                old = known.get(key)
                if new is _DELETED:
                    if old is None:
                        continue
                    deleted.append(key)
                    del known[key]
                    value = b"[%d,null,%b,%b]" % (seq, old, writer)
                else:
                    new_json = orjson.dumps(new)
                    known[key] = new_json
                    value = b"[%d,%b,%b,%b]" % (seq, new_json, old or b"null", writer)
                local[key] = value
                send(partition, key, value)
            key = self._key(partition, COMMIT)
            value = orjson.dumps(
                [seq, commit, *owner.token, owner.owned_from], option=orjson.OPT_NON_STR_KEYS
            )
            local[key] = value
            self._sent[partition] = send(partition, key, value)
        finally:
            _current_event.reset(token)
        self.seq[partition] = seq
        if deleted:
            self._tombstones[partition] = deleted

    def last_send(self, partition: int) -> asyncio.Future:
        """The changelog send of the partition's last commit record."""
        return self._sent[partition]

    def forget(self, partition: int) -> None:
        self.seq.pop(partition, None)
        self._tombstones.pop(partition, None)
        self._repairs.pop(partition, None)
        self._committed.pop(partition, None)
        self._sent.pop(partition, None)
        self._owners.pop(partition, None)
