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


# More vectors, each checked against org.apache.kafka.common.utils.Utils.murmur2 of the Kafka 4.4.0
# client jar that deploy/kafka/pom.xml fetches (Java, UTF-8 bytes): every tail length (0-3 bytes),
# a multi-byte character, and the keys librdkafka's own murmur2 unit test uses.
# Columns: key, Utils.murmur2 (signed), Utils.toPositive(murmur2) % 12.
JAVA_VECTORS = [
    ("", 275646681, 9),
    ("4", 1514888353, 1),
    ("34", -2026295078, 6),
    ("234", -406844982, 2),
    ("1234", -1614185708, 0),
    ("kafka", -798503068, 4),
    ("giberish123456789", -1890243828, 8),
    ("feeder-0042", -1810899940, 4),
    ("héllo", 614509002, 6),
    ("21", -973932308, 0),
    ("foobar", -790332482, 6),
    ("abc", 479470107, 3),
]


@pytest.mark.parametrize("key, expected, partition_of_12", JAVA_VECTORS)
def test_murmur2_and_partition_match_the_java_client(key, expected, partition_of_12):
    assert _signed(murmur2(key.encode("utf-8"))) == expected
    assert partition_for(key, 12) == partition_of_12
    assert partition_for(key.encode("utf-8"), 12) == partition_of_12  # str and bytes keys agree


def test_murmur2_is_unsigned_32_bit():
    for key in ("21", "foobar", "abc", "x" * 1000):
        assert 0 <= murmur2(key.encode()) < 1 << 32


def test_faust_and_aiokafka_pick_the_same_partitions():
    """The stream worker (Faust on aiokafka) must land a feeder where producers put it."""
    from aiokafka.partitioner import DefaultPartitioner

    aiokafka_partition = DefaultPartitioner()
    for partitions in (1, 4, 7, 8, 12):
        ids = list(range(partitions))
        for i in range(500):
            key = f"F{i:04d}"
            assert partition_for(key, partitions) == aiokafka_partition(key.encode(), ids, ids)
