"""Kafka's default partition of a key (app/source/partitioner.py), as the Java clients
compute it: a producer in any language puts a user's records where this says."""

from __future__ import annotations

import pytest

from app.source import partitioner
from app.source.partitioner import KeyPartitioner

# murmur2 of these keys as Kafka's Java client computes it (its UtilsTest.testMurmur2),
# as a signed 32-bit int; the partition is (murmur2 & 0x7fffffff) % partitions
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("partitions", [1, 4, 7, 12])
def test_a_key_goes_where_the_java_client_puts_it(partitions):
    partition = KeyPartitioner(partitions)
    for key, hashed in JAVA_MURMUR2.items():
        assert partition(key) == (hashed & 0x7FFFFFFF) % partitions, key


def test_a_full_cache_is_emptied_and_answers_stay_the_same(monkeypatch):
    monkeypatch.setattr(partitioner, "_CACHE_MAX", 3)
    partition = KeyPartitioner(12)
    first = {}
    for key in JAVA_MURMUR2:
        first[key] = partition(key)
        assert len(partition._cache) <= 3  # bounded
    assert {key: partition(key) for key in JAVA_MURMUR2} == first
    assert first == {key: (h & 0x7FFFFFFF) % 12 for key, h in JAVA_MURMUR2.items()}
