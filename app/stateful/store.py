"""All-or-nothing batches on top of a Faust table (RocksDB + Kafka changelog).

Faust writes each key to the changelog on its own, so a crash can leave half a batch
behind. Every key of one partition lives in one table, hence in one changelog
partition, where records keep their order: a batch is its key records followed by
a commit record. Each key record is `[seq, new, old]`; on load a key whose seq is
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
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust.streams import _current_event

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
        committed_seq, commit = orjson.loads(scan.raw_commit) if scan.raw_commit else (0, None)
        loaded = Loaded(committed_seq, commit)
        for key, raw in scan.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].decode()
            if name == COMMIT:
                continue
            seq, new, old = orjson.loads(raw)
            value = new if seq <= committed_seq else old
            if seq > committed_seq:
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

    def write(self, partition: int, event, changes: Mapping[str, Any], commit: Any) -> None:
        """Write one batch (value None deletes) and its commit record, in that order.

        Runs in the context of `event`, a record of this partition, because Faust picks
        the RocksDB and changelog partition from the current event. Await `landed` for
        the partition first.
        """
        committed = self.seq.get(partition, 0)
        seq = committed + 1
        repairs = self._repairs.pop(partition, None)
        if repairs:
            changes = {**repairs, **changes}
        token = _current_event.set(weakref.ref(event))
        try:
            table = self.table
            # keys deleted by the previous (now committed) batch can go for good, unless
            # this batch writes them again: two writes of a key in one batch could be
            # split by the changelog replay after a crash (see the module docstring)
            for key in self._tombstones.pop(partition, ()):
                name = key.split(b"|", 1)[1].decode()
                if changes.get(name, _DELETED) is _DELETED and key in table:
                    del table[key]
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
                    table[key] = b"[%d,null,%b]" % (seq, old)
                    continue
                new_json = orjson.dumps(new)
                known[key] = new_json
                table[key] = b"[%d,%b,%b]" % (seq, new_json, old or b"null")
            # `table[key] = value` without dropping the changelog send's future
            key = self._key(partition, COMMIT)
            value = orjson.dumps([seq, commit], option=orjson.OPT_NON_STR_KEYS)
            self._sent[partition] = table.send_changelog(partition, key, value)
            table.data[key] = value
        finally:
            _current_event.reset(token)
        self.seq[partition] = seq
        if deleted:
            self._tombstones[partition] = deleted

    def forget(self, partition: int) -> None:
        self.seq.pop(partition, None)
        self._tombstones.pop(partition, None)
        self._repairs.pop(partition, None)
        self._committed.pop(partition, None)
        self._sent.pop(partition, None)
