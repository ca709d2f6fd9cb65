"""Operator feedback reaches a running worker live: a false-alarm mark closes the incident (by the operator)
and suppresses that kind on that meter, which the worker counts and publishes with suppressed_by."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pandas as pd
import pytest

from detection.feedback import mark_for_incident
from feedback.topic import publish_mark
from readings.producer import ReadingProducer
from schemas.serde import SingleObjectSerde
from simulation.fleet import FleetConfig, simulate_fleet
from tests.stream_processors.stream_checks import read_anomalies, read_incidents, wait_for_zero_lag
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

FLEET = FleetConfig(meters=10, days=10, interval=timedelta(hours=1), seed=515, meters_per_feeder=10,
                    anomaly_rate=0.0, missing_rate=0.0, late_rate=0.0)
METER = "M000004"


def zero_evenings(readings: pd.DataFrame, days: tuple[int, ...]) -> pd.DataFrame:
    frame = readings.copy()
    day0 = frame["timestamp"].min().normalize()
    for day in days:
        first = day0 + pd.Timedelta(days=day, hours=17)
        window = (frame["meter_id"] == METER) & frame["timestamp"].between(first, first + pd.Timedelta(hours=5))
        frame.loc[window, "kwh"] = 0.0
    return frame


def test_a_false_alarm_mark_closes_the_incident_and_suppresses_the_kind_live(kafka, stream_workers,
                                                                             trained_model_dir):
    readings = zero_evenings(simulate_fleet(FLEET).readings, (7,))
    day0 = readings["timestamp"].min().normalize()
    topics = kafka.fresh_topics(partitions=2)
    app_id = f"feedback-{os.urandom(3).hex()}"
    # up to the middle of the first outage: an incident is open when the operator marks it
    cut = day0 + pd.Timedelta(days=7, hours=19)
    first, rest = readings[readings["timestamp"] <= cut], readings[readings["timestamp"] > cut]
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(first, batch_by_feeder=True)
    worker = stream_workers.start(topics, trained_model_dir, app_id=app_id)
    worker.wait_for("wattsup_stream_readings_processed_total", len(first), timeout=180)
    wait_for_zero_lag(kafka, app_id, topics.readings, worker)
    opened = wait_until(lambda: [r for r in read_incidents(kafka, topics.incidents)
                                 if r["meter_id"] == METER and r["kind"] == "outage"], 60, "the outage's incident")
    incident = opened[-1]
    assert incident["status"] == "open"

    mark = mark_for_incident(incident, "false_alarm", created_at=int(time.time() * 1000), days=5, operator="test")
    publish_mark(kafka.connection, topics, SingleObjectSerde(), mark)
    worker.wait_for("wattsup_stream_feedback_marks_applied_total", 1, timeout=60)  # the mark reached the stream

    processed = worker.metric("wattsup_stream_readings_processed_total")
    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(rest, batch_by_feeder=True)
    worker.wait_for("wattsup_stream_readings_processed_total", processed + len(rest), timeout=180)
    wait_for_zero_lag(kafka, app_id, topics.readings, worker)
    suppressed_count = worker.metric("wattsup_stream_anomalies_suppressed_total")
    worker.stop()

    records = [r for r in read_incidents(kafka, topics.incidents) if r["meter_id"] == METER and r["kind"] == "outage"]
    assert {r["incident_id"] for r in records} == {incident["incident_id"]}, "no new outage incident on the meter"
    assert records[-1]["status"] == "closed" and records[-1]["closed_by"] == "operator"
    anomalies = read_anomalies(kafka, topics.anomalies)
    later = anomalies[(anomalies["meter_id"] == METER) & (anomalies["kind"] == "outage")
                      & (anomalies["timestamp"] > cut)]
    # the three zero hours of the marked outage after the mark are still detected, and suppressed
    assert len(later) >= 3, later
    assert set(later["suppressed_by"]) == {"feedback_scope"}
    assert suppressed_count == len(later)
