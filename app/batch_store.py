"""All-or-nothing batches on top of a Faust table (RocksDB + Kafka changelog).

Faust writes each key to the changelog on its own, so a crash can leave half a batch
behind. Every key of one partition lives in one table, hence in one changelog
partition, where records keep their order: a batch is its key records followed by
a commit record. Each key record is `[seq, new, old]`; on load a key whose seq is
newer than the last commit record reads as `old`, so the state is exactly that of
the last whole batch. The commit record also carries the input offset the batch
ended at, so the stage re-reads only what that state does not hold.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import Any

import orjson
from faust.streams import _current_event

COMMIT = "~commit"
_DELETED = None


class BatchStore:
    def __init__(self, table) -> None:
        self.table = table
        self.seq: dict[int, int] = {}
        self._tombstones: dict[int, list[bytes]] = {}
        # keys left by a half-written batch: rewritten with their committed value next time
        self._repairs: dict[int, dict[str, Any]] = {}
        # committed value of every key as JSON, so a write needs no read of the old value
        self._committed: dict[int, dict[bytes, bytes]] = {}

    @staticmethod
    def _key(partition: int, name: str) -> bytes:
        return f"{partition}|{name}".encode()

    def load(self, partition: int) -> tuple[Any | None, dict[str, Any]]:
        """(commit payload or None, {name: value}) as of the last whole batch."""
        prefix = f"{partition}|".encode()
        raw_commit = self.table.get(self._key(partition, COMMIT))
        committed_seq, commit = orjson.loads(raw_commit) if raw_commit else (0, None)
        self.seq[partition] = committed_seq
        values: dict[str, Any] = {}
        repairs: dict[str, Any] = {}
        committed_json: dict[bytes, bytes] = {}
        for key, raw in self.table.items():
            if not key.startswith(prefix):
                continue
            name = key[len(prefix) :].decode()
            if name == COMMIT:
                continue
            seq, new, old = orjson.loads(raw)
            value = new if seq <= committed_seq else old
            if seq > committed_seq:
                repairs[name] = value
            if value is not _DELETED:
                values[name] = value
                committed_json[key] = orjson.dumps(value)
        self._repairs[partition] = repairs
        self._committed[partition] = committed_json
        return commit, values

    def write(self, partition: int, event, changes: Mapping[str, Any], commit: Any) -> None:
        """Write one batch (value None deletes) and its commit record, in that order.

        Runs in the context of `event`, a record of this partition, because Faust picks
        the RocksDB and changelog partition from the current event.
        """
        committed = self.seq.get(partition, 0)
        seq = committed + 1
        repairs = self._repairs.pop(partition, None)
        if repairs:
            changes = {**repairs, **changes}
        token = _current_event.set(weakref.ref(event))
        try:
            table = self.table
            # keys deleted by the previous (now committed) batch can go for good
            for key in self._tombstones.pop(partition, ()):
                if key in table:
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
            table[self._key(partition, COMMIT)] = orjson.dumps(
                [seq, commit], option=orjson.OPT_NON_STR_KEYS
            )
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
