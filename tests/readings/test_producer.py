"""The readings producer without a broker: failures are counted in readings, not records."""

from __future__ import annotations

from foundation.kafka_settings import KafkaConnection, TopicNames
from readings.producer import DeliverySummary, ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet
from tests.waiting import closed_port


def test_undelivered_readings_count_as_failed_in_readings_not_records():
    topics = TopicNames(readings="r", dead_letters="d")
    frame = simulate_fleet(FleetConfig(meters=20, days=0.25, meters_per_feeder=10)).readings
    producer = ReadingProducer(KafkaConnection(bootstrap_servers=f"127.0.0.1:{closed_port()}"), topics,
                               flush_timeout=0.5)
    producer.send_frame(frame, batch_by_feeder=True)
    producer.send_dead_letter("csv:x.csv", "negative kwh -1", raw_text="t,m,-1", row_number=2)
    summary = producer.close()
    assert summary.sent == 0 and summary.failed == len(frame)
    assert summary.rejected == 1 and summary.dead_letters_failed == 1
    assert not summary.ok
    assert summary.line().startswith(f"sent=0 failed={len(frame)} rejected=1 ")


def test_summary_line_and_rate():
    summary = DeliverySummary(sent=1000, started=0.0, finished=2.0)
    assert summary.readings_per_second == 500
    assert summary.line() == "sent=1000 failed=0 rejected=0 records=0 seconds=2.00 rate=500 readings/s"
    assert summary.ok
