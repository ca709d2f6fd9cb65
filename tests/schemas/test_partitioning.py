"""Kafka's murmur2 partitioner, reproduced so forecasts can be sent to their feeder's partition."""

from __future__ import annotations

import pytest

from schemas.partitioning import murmur2, partition_for


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


# Expected values from Kafka's UtilsTest.testMurmur2 (Java, signed 32-bit).
@pytest.mark.parametrize("key, expected", [
    ("21", -973932308),
    ("foobar", -790332482),
    ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829),
    ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ("abc", 479470107),
])
def test_murmur2_matches_kafka(key, expected):
    assert _signed(murmur2(key.encode())) == expected


def test_partition_is_positive_hash_modulo_partitions():
    for key in ("F0001", "F0002", "meter-x", ""):
        p = partition_for(key, 8)
        assert 0 <= p < 8
        assert p == (murmur2(key.encode()) & 0x7FFFFFFF) % 8
