"""One user-keyed partition's state on local disk: a RocksDB database (rocksdict).

It is a cache of the partition's changelog (app/stateful/changelog.py), holding the
changelog's records as they are (state key -> encoded value), and beside them, in
the same write batch, where it stands (as Quix Streams' RocksDB partition does):

- `changelog_next`: the changelog offset after the last record it holds;
- `input_next`: the input offset its state covers (the next to read);
- `written_at`: wall time of the write (old local state may have missed tombstones
  that compaction has since removed from the changelog: restore.py rebuilds it).

A write batch is all or nothing, so after any crash the database is the state of one
whole commit, and the changelog from `changelog_next` on is what it lacks. A write
that fails (a full disk) leaves it as it was; later writes are then refused too, so
it never holds a later commit on top of a missing one.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)
META = b"\x00meta"  # sorts before every state key


@dataclass(frozen=True)
class Position:
    changelog_next: int
    input_next: int
    written_at: float  # epoch seconds


def _options() -> Options:
    # A partition's state is tens of MB at 100k users and is read only on restore:
    # small memtables and the default (8 MB) block cache keep a worker's RSS down.
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_write_buffer_size(4 << 20)
    options.set_max_write_buffer_number(2)
    return options


class LocalState:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), _options())
        self.broken = False

    @property
    def position(self) -> Position | None:
        raw = self._db.get(META)
        if raw is None:
            return None
        meta = orjson.loads(raw)
        return Position(meta["changelog_next"], meta["input_next"], meta["written_at"])

    def write(
        self,
        records: Iterable[tuple[bytes, bytes | None]],
        changelog_next: int,
        input_next: int,
    ) -> bool:
        """Apply changelog records (value None deletes) and the new position, as one.
        False when the database cannot be written (nothing of it is applied)."""
        if self.broken:
            return False
        batch = WriteBatch(raw_mode=True)
        for key, value in records:
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        meta = {"changelog_next": changelog_next, "input_next": input_next}
        meta["written_at"] = time.time()
        batch.put(META, orjson.dumps(meta))
        try:
            self._db.write(batch)
        except Exception as exc:  # a full or read-only disk
            self.broken = True
            log.error(
                "stateful: cannot write the local state in %s (%s); it is rebuilt from "
                "the changelog when the partition is next assigned",
                self.path,
                exc,
            )
            return False
        return True

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every state key and its encoded value (the position left out)."""
        for key, value in self._db.items():
            if key != META:
                yield key, value

    def close(self) -> None:
        self._db.close()

    def wipe(self) -> LocalState:
        """Start empty: close, remove the database, open a new one."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        return LocalState(self.path)
