"""The dashboard behind a real ``wattsup stream`` worker: its anomalies are stored and served, and a
sensitivity change made through the API takes effect in the running worker."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import create_token
from dashboard.settings import DashboardSettings
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet
from tests.stream_processors.stream_checks import read_anomalies
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_worker_anomalies_reach_the_api_and_api_sensitivity_reaches_the_worker(kafka, stream_workers,
                                                                              trained_model_dir, tmp_path):
    topics = kafka.fresh_topics(partitions=2)
    fleet = simulate_fleet(FleetConfig(meters=100, days=8, interval=timedelta(hours=1), seed=404, anomaly_rate=0.0))
    readings = fleet.readings
    days = readings["timestamp"].dt.floor("D")
    calm_part = readings[days < days.min() + pd.Timedelta(days=6)]
    sensitive_part = readings[days >= days.min() + pd.Timedelta(days=6)]

    settings = DashboardSettings(database_url=f"sqlite:///{tmp_path / 'wattsup.db'}", kafka=kafka.connection,
                                 topics=topics, model_dir=trained_model_dir)
    app = create_app(settings)
    worker = stream_workers.start(topics, trained_model_dir, app_id=f"dash-{os.urandom(3).hex()}")
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {create_token(app.state.service.sessions, 'ops')}"}
        with ReadingProducer(kafka.connection, topics) as producer:
            producer.send_frame(calm_part, batch_by_feeder=True)
        worker.wait_for("wattsup_stream_readings_processed_total", len(calm_part), timeout=240)
        calm = _settled(worker)
        assert calm > 0
        # Every anomaly the worker emitted is stored once, with its explanation.
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == len(read_anomalies(kafka, topics.anomalies)),
                   timeout=120, what="worker anomalies stored", poll=0.5)
        page = client.get("/api/v1/anomalies", params={"limit": 5}).json()["items"]
        assert all(a["causes"] and a["causes"][0]["text"] and a["model_version"] for a in page)
        summary = client.get("/api/v1/summary").json()
        assert summary["meters"] == 100
        meter = page[0]["meter_id"]
        series = client.get("/api/v1/series", params={"meter_id": meter}).json()
        assert len(series["readings"]) == 48  # the default window: the last 48 h of hourly data

        # Sensitivity 10 through the API: the worker flags far more of the same kind of data.
        applied = worker.metric("wattsup_stream_control_updates_total")
        assert client.put("/api/v1/sensitivity", headers=auth, json={"value": 10.0}).json()["fleet"] == 10.0
        worker.wait_for("wattsup_stream_control_updates_total", applied + 1)  # the worker has applied it
        with ReadingProducer(kafka.connection, topics) as producer:
            producer.send_frame(sensitive_part, batch_by_feeder=True)
        worker.wait_for("wattsup_stream_readings_processed_total", len(readings), timeout=240)
        sensitive = _settled(worker) - calm
        assert sensitive / len(sensitive_part) > 2 * calm / len(calm_part), (calm, sensitive)
        on_topic = read_anomalies(kafka, topics.anomalies)
        wait_until(lambda: client.get("/api/v1/anomalies").json()["total"] == len(on_topic),
                   timeout=120, what="sensitive-phase anomalies stored", poll=0.5)
        stored = [a for offset in range(0, len(on_topic), 1000)
                  for a in client.get("/api/v1/anomalies", params={"limit": 1000, "offset": offset}).json()["items"]]
        assert sorted((a["meter_id"], a["timestamp"]) for a in stored) == sorted(
            (m, t.strftime("%Y-%m-%dT%H:%M:%SZ")) for m, t in zip(on_topic["meter_id"], on_topic["timestamp"]))


def _settled(worker, quiet_seconds: float = 3.0) -> float:
    """The worker's anomaly count once it stops changing (sends can trail the processed-readings counter)."""
    previous = None
    while True:
        value = worker.metric("wattsup_stream_anomalies_total")
        if value == previous:
            return value
        previous = value
        time.sleep(quiet_seconds)
