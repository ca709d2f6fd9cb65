"""Where a record lands: one rule shared by producers, the forecaster and the stream worker.

Every topic that carries a meter's data is keyed so that the meter's readings, its state in
the stream worker and its forecast meet in one partition: the partition is chosen from the
meter's **feeder id** with Kafka's murmur2 hash, the same hash the Java client, Faust/aiokafka
and confluent-kafka's ``murmur2_random`` partitioner use (``foundation.kafka_clients.PARTITIONER``).
Readings and head-end batches are keyed by feeder id and let the client partition; forecasts are keyed by meter id (so the
compacted topic keeps the newest forecast per meter) and are sent to the feeder's partition
explicitly with :func:`partition_for`.
"""

from __future__ import annotations


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``)."""
    length = len(data)
    seed = 0x9747B28C
    m = 0x5BD1E995
    r = 24
    h = (seed ^ length) & 0xFFFFFFFF
    length4 = length // 4
    for i in range(length4):
        i4 = i * 4
        k = (data[i4] & 0xFF) | ((data[i4 + 1] & 0xFF) << 8) | ((data[i4 + 2] & 0xFF) << 16) | ((data[i4 + 3] & 0xFF) << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    extra = length % 4
    tail = length & ~3
    if extra >= 3:
        h ^= (data[tail + 2] & 0xFF) << 16
    if extra >= 2:
        h ^= (data[tail + 1] & 0xFF) << 8
    if extra >= 1:
        h ^= data[tail] & 0xFF
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def partition_for(key: str | bytes, num_partitions: int) -> int:
    """Partition Kafka's default partitioner picks for a non-null key (``toPositive(murmur2) % n``)."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % num_partitions
