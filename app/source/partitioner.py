"""Kafka's default partition of a key (murmur2, as the Java clients compute it)."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

_CACHE_MAX = 1_000_000


class KeyPartitioner:
    """`partitioner(key)` -> partition, cached: the same users come back all the time."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[bytes, int] = {}

    def __call__(self, key: bytes) -> int:
        partition = self._cache.get(key)
        if partition is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            partition = (murmur2(key) & 0x7FFFFFFF) % self.partitions
            self._cache[key] = partition
        return partition
