"""The agent's micro-batch plumbing: bulk decoding, chunks by payload, batched table writes, the feeder clock."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from readings.columns import ReadingColumns, decode_into
from schemas.partitioning import partition_for
from schemas.serde import METER_READING, METER_READING_BATCH, SingleObjectSerde
from stream_processors.batching import chunks_by_bytes
from stream_processors.changelog_batch import BatchedTable
from stream_processors.decoding import decode_messages, message_source
from stream_processors.feeder_metrics import FeederClock

NOW_MS = 1_800_000_000_000


def reading(meter: str, feeder: str = "F0001", ts: int = 1_700_000_000_000, kwh: float = 0.5) -> dict:
    return {"meter_id": meter, "feeder_id": feeder, "timestamp": ts, "energy_kwh": kwh, "interval_seconds": 3600,
            "voltage_v": None, "power_kw": None, "quality_flags": []}


def batch(feeder: str, readings: list[dict]) -> dict:
    return {"batch_id": f"{feeder}-1", "feeder_id": feeder, "head_end_id": None, "uploaded_at": NOW_MS - 1,
            "readings": readings}


def one_by_one(serde, messages) -> tuple[ReadingColumns, list]:
    columns, rejections = ReadingColumns(), []
    for value, partition, offset in messages:
        rejections += decode_into(columns, serde, value, message_source("t", partition, offset), NOW_MS)
    return columns, rejections


def test_decoding_a_batch_at_once_gives_the_columns_of_decoding_message_by_message():
    serde = SingleObjectSerde()
    values = [serde.encode(METER_READING, reading("M1")),
              serde.encode(METER_READING_BATCH, batch("F0002", [reading("M2", "F0002"), reading("M3", "F0002", kwh=-0.2)])),
              serde.encode(METER_READING, reading("M4", ts=1_700_000_360_000))]
    messages = [(v, 3, 10 + i) for i, v in enumerate(values)]
    columns, rejections = decode_messages(serde, "t", messages, NOW_MS)
    want, _ = one_by_one(serde, messages)
    assert rejections == []
    assert columns == want and len(columns) == 4


def test_a_bad_message_or_reading_is_rejected_with_its_own_source_and_the_rest_go_on():
    serde = SingleObjectSerde()
    values = [serde.encode(METER_READING, reading("M1")), b"not avro at all",
              serde.encode(METER_READING_BATCH, batch("F0002", [reading("M2", "F0002"),
                                                                reading("M3", "F0002", ts=NOW_MS + 5 * 86_400_000)]))]
    messages = [(v, 1, 40 + i) for i, v in enumerate(values)]
    columns, rejections = decode_messages(serde, "t", messages, NOW_MS)
    want_columns, want_rejections = one_by_one(serde, messages)
    assert columns.meter_ids == ["M1", "M2"] and columns == want_columns
    assert [(r.source, r.kind) for r in rejections] == [(r.source, r.kind) for r in want_rejections]
    assert [r.source for r in rejections] == ["topic:t[1]@41", "topic:t[1]@42"]


def test_chunks_hold_whole_messages_within_the_payload_bound():
    messages = [(b"x" * size, 0, i) for i, size in enumerate([40, 40, 30, 100, 10, 10])]
    chunks = [list(c) for c in chunks_by_bytes(messages, 80)]
    assert [[m[2] for m in c] for c in chunks] == [[0, 1], [2], [3], [4, 5]]  # 100 > 80 goes alone
    assert [m for c in chunks for m in c] == messages
    assert list(chunks_by_bytes([], 80)) == []


class RecordingProducer:
    def __init__(self) -> None:
        self.sent: list[list] = []

    async def send_all(self, records, what: str = "records") -> None:
        self.sent.append(list(records))


def test_table_writes_reach_only_the_changelog_together_in_order_on_flush():
    producer = RecordingProducer()
    batched = BatchedTable("app-feeder-state-changelog", 4, producer)  # type: ignore[arg-type]
    batched[b"F0001|fast"] = b"a"
    batched[b"F0002|fast"] = b"b"
    batched[b"F0001|h3"] = b"c"
    assert batched.get(b"F0001|fast") is None and len(batched) == 0  # no local copy
    assert batched.pending == 3 and producer.sent == []
    asyncio.run(batched.flush())
    # each record in its feeder's readings partition (murmur2, as the producers key them)
    p1, p2 = partition_for("F0001", 4), partition_for("F0002", 4)
    assert producer.sent == [[("app-feeder-state-changelog", b"F0001|fast", b"a", p1),
                              ("app-feeder-state-changelog", b"F0002|fast", b"b", p2),
                              ("app-feeder-state-changelog", b"F0001|h3", b"c", p1)]]
    asyncio.run(batched.flush())  # nothing new: nothing sent
    assert batched.pending == 0 and len(producer.sent) == 1


def test_records_read_back_are_served_until_taken_and_those_of_lost_partitions_dropped():
    batched = BatchedTable("app-feeder-state-changelog", 4, RecordingProducer())  # type: ignore[arg-type]
    batched.recovered.update({b"F0001|fast": b"a", b"F0001|h3": b"c", b"F0002|fast": b"b"})
    assert b"F0001|fast" in batched and batched.get(b"F0001|h3") == b"c" and len(batched) == 3
    assert batched.pop(b"F0001|fast") == b"a" and batched.pop(b"F0001|fast") is None
    assert batched.pending == 0  # taking writes nothing
    batched.keep_recovered({partition_for("F0001", 4)})
    assert batched.recovered == {b"F0001|h3": b"c"}


def test_the_feeder_clock_keeps_each_feeders_newest_reading_and_renders_it_as_a_gauge():
    registry = CollectorRegistry()
    clock = FeederClock(registry)
    clock.observe({"F1": 2_000, "F2": 1_000})
    clock.observe({"F1": 1_500})  # a batch of late readings does not move F1 back
    text = generate_latest(registry).decode()
    assert 'wattsup_stream_feeder_last_reading_timestamp_seconds{feeder="F1"} 2.0' in text
    assert 'wattsup_stream_feeder_last_reading_timestamp_seconds{feeder="F2"} 1.0' in text
    assert len(clock) == 2
