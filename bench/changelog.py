"""The stateful stage's changelog format, measured: one record per changed key per
commit (what app/stateful/changelog.py writes) against one record per commit holding
every changed key, with a snapshot of the whole state every `snapshot_every` commits.

Per commit: encoding the changed keys and appending them to a Kafka record batch (the
producer's own builder), and the bytes that go to the broker. Per restore: what a new
owner reads and decodes. No broker: these are the CPU costs on the worker.
"""

from __future__ import annotations

import random
import statistics
import time

import orjson
from aiokafka.producer.message_accumulator import BatchBuilder

from app.stateful import changelog


def _state(users: int, rng: random.Random) -> dict[str, list]:
    """Keys shaped like the aggregator's: per user its minutes and session, and one
    session event waiting for the watermark."""
    t = 1_800_000_000_000
    state: dict[str, list] = {}
    for i in range(users):
        state[f"u|user_{i:06d}"] = [
            [t + 60_000 * k for k in range(rng.randint(1, 5))],
            [t, t + rng.randint(0, 900_000)],
        ]
        state[f"e|user_{i:06d}|0|{rng.randint(0, 10**6)}"] = [t + rng.randint(0, 120_000), "click"]
    return state


def _batch_builder() -> BatchBuilder:
    return BatchBuilder(1 << 20, 0, is_transactional=1)  # no compression, as the producer


def _append_all(records: list[tuple[bytes, bytes | None]]) -> int:
    """Append records to batches as the checkpoint does; returns the bytes built."""
    size, batch = 0, _batch_builder()
    for key, value in records:
        if batch.append(key=key, value=value, timestamp=None, headers=[]) is None:
            size += batch.size()
            batch = _batch_builder()
            batch.append(key=key, value=value, timestamp=None, headers=[])
    return size + batch.size()


def _median_us(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


def figures(
    users: int = 25_000, changed: int = 1_000, snapshot_every: int = 100, repeat: int = 21
) -> dict:
    rng = random.Random(5)
    state = _state(users, rng)
    names = rng.sample(sorted(state), changed)
    writes = {name: state[name] for name in names}

    per_key_bytes = [0]

    def per_key_commit() -> None:
        per_key_bytes[0] = _append_all(changelog.records(writes))

    blob_bytes = [0]

    def blob_commit() -> None:
        value = orjson.dumps(writes)
        blob_bytes[0] = _append_all([(b"~commit", value)])

    snapshot = orjson.dumps(state)

    def snapshot_commit() -> None:
        _append_all([(b"~snapshot", snapshot)])

    # restore: per key, the compacted log holds each live key once
    compacted = changelog.records(state)

    def per_key_restore() -> None:
        for _, value in compacted:
            changelog.decode(value)

    delta = orjson.dumps(writes)

    def blob_restore() -> None:  # the last snapshot, then on average half the deltas since
        orjson.loads(snapshot)
        for _ in range(snapshot_every // 2):
            orjson.loads(delta)

    per_key = _median_us(per_key_commit, repeat)
    blob = _median_us(blob_commit, repeat) + _median_us(snapshot_commit, 3) / snapshot_every
    return {
        "users": users,
        "changed_keys_per_commit": changed,
        "snapshot_every_commits": snapshot_every,
        "per_key": {
            "commit_us": round(per_key),
            "commit_bytes": per_key_bytes[0],
            "restore_ms": round(_median_us(per_key_restore, 5) / 1000, 1),
        },
        "blob_with_snapshots": {
            "commit_us": round(blob),
            "commit_bytes": blob_bytes[0] + len(snapshot) // snapshot_every,
            "restore_ms": round(_median_us(blob_restore, 5) / 1000, 1),
        },
    }


if __name__ == "__main__":
    print(orjson.dumps(figures(), option=orjson.OPT_INDENT_2).decode())
