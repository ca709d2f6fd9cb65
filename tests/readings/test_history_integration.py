"""Reading history back from the real broker: exactly what was produced, within the asked range."""

from __future__ import annotations

from datetime import timedelta

import pytest

from readings.history import read_readings
from readings.producer import ReadingProducer
from schemas.partitioning import partition_for
from simulation.fleet import FleetConfig, simulate_fleet

pytestmark = pytest.mark.integration


def test_read_readings_returns_exactly_what_was_produced_in_the_time_range(kafka):
    topics = kafka.fresh_topics(partitions=3)
    frame = simulate_fleet(FleetConfig(meters=30, days=5, interval=timedelta(hours=1), seed=12)).readings
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(frame.iloc[: len(frame) // 2], batch_by_feeder=True)
        producer.send_frame(frame.iloc[len(frame) // 2:])
    back = read_readings(kafka.connection, topics.readings)
    assert len(back) == len(frame)
    assert sorted(zip(back["meter_id"], back["timestamp"], back["kwh"])) == \
        sorted(zip(frame["meter_id"], frame["timestamp"], frame["kwh"]))
    since = frame["timestamp"].min() + timedelta(days=2)
    part = read_readings(kafka.connection, topics.readings, since=since)
    assert len(part) == int((frame["timestamp"] >= since).sum())


def test_a_restarted_simulator_continues_from_the_oldest_of_the_partitions_newest_readings(kafka):
    from readings.history import resume_point_ms

    topics = kafka.fresh_topics(partitions=3)
    assert resume_point_ms(kafka.connection, topics.readings) is None
    frame = simulate_fleet(FleetConfig(meters=120, days=2, interval=timedelta(hours=1), seed=13,
                                       meters_per_feeder=40, late_rate=0.0)).readings
    newest = int(frame["timestamp"].max().timestamp() * 1000)
    lagging = frame["feeder_id"] == "F0002"  # one feeder's last hours still in flight at a crash
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(frame[~lagging | (frame["timestamp"] <= frame["timestamp"].max() - timedelta(hours=3))],
                            batch_by_feeder=True)
    # F0002 is alone in partition 0 of 3 (murmur2), so that partition's newest is 3 h behind the others'
    assert [partition_for(f, 3) for f in ("F0001", "F0002", "F0003")] == [1, 0, 1]
    assert resume_point_ms(kafka.connection, topics.readings) == newest - 3 * 3_600_000


def test_read_readings_of_some_partitions_only_with_the_partition_of_each(kafka):
    """A forecaster instance reads only the partitions its group assigned it."""
    topics = kafka.fresh_topics(partitions=4)
    frame = simulate_fleet(FleetConfig(meters=40, days=1, interval=timedelta(hours=1), seed=13,
                                       meters_per_feeder=4)).readings
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(frame.iloc[: len(frame) // 2], batch_by_feeder=True)
        producer.send_frame(frame.iloc[len(frame) // 2:])
    feeder_partition = {f: partition_for(f, 4) for f in frame["feeder_id"].unique()}
    assert len(set(feeder_partition.values())) > 2  # the fleet spreads over the partitions
    back = read_readings(kafka.connection, topics.readings, partitions=[1, 3], with_partition=True)
    expected = frame[frame["feeder_id"].map(feeder_partition).isin([1, 3])]
    assert len(back) == len(expected) > 0
    assert sorted(zip(back["meter_id"], back["timestamp"])) == sorted(zip(expected["meter_id"], expected["timestamp"]))
    assert (back["partition"] == back["feeder_id"].map(feeder_partition)).all()
    assert read_readings(kafka.connection, topics.readings, partitions=[]).empty
    assert "partition" not in read_readings(kafka.connection, topics.readings, partitions=[0]).columns
    with pytest.raises(ValueError, match="no partitions"):
        read_readings(kafka.connection, topics.readings, partitions=[7])
