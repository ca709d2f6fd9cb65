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
