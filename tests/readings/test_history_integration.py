"""Reading history back from the real broker: exactly what was produced, within the asked range."""

from __future__ import annotations

from datetime import timedelta

import pytest

from readings.history import read_readings
from readings.producer import ReadingProducer
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


def test_read_readings_of_some_partitions_only_with_the_partition_of_each(kafka):
    """A forecaster instance reads only the partitions its group assigned it."""
    from schemas.partitioning import partition_for

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
