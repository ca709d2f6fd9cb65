"""Incidents on the real broker: each injected outage is one incident that opens, grows and closes,
and a worker killed with kill -9 in the middle of one continues it under the same id; a dashboard that
alerts per incident sends one webhook on each opening and one on each closing."""

from __future__ import annotations

import os
from datetime import timedelta

import pandas as pd
import pytest

from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.auth import create_token
from dashboard.settings import DashboardSettings
from readings.producer import ReadingProducer
from simulation.fleet import FleetConfig, simulate_fleet
from tests.stream_processors.stream_checks import read_incidents, wait_for_zero_lag
from tests.waiting import wait_until
from tests.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.integration

# 2 feeders of 10 meters, 10 days hourly, no anomalies of the simulator's own: the outages are ours.
FLEET = FleetConfig(meters=20, days=10, interval=timedelta(hours=1), seed=414, meters_per_feeder=10,
                    anomaly_rate=0.0, missing_rate=0.0, late_rate=0.0)
OUTAGE_HOURS = 6


def with_outages(readings: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, pd.Timestamp, pd.Timestamp]]]:
    """Zero the readings of three meters for six evening hours on days 7 and 8 (their usage is usual
    then); returns the readings and (meter, first, last) of each outage."""
    frame = readings.copy()
    day0 = frame["timestamp"].min().normalize()
    outages = []
    for meter, day in (("M000003", 7), ("M000012", 7), ("M000017", 8)):
        first = day0 + pd.Timedelta(days=day, hours=17)
        last = first + pd.Timedelta(hours=OUTAGE_HOURS - 1)
        window = (frame["meter_id"] == meter) & frame["timestamp"].between(first, last)
        assert window.sum() == OUTAGE_HOURS
        frame.loc[window, "kwh"] = 0.0
        outages.append((meter, first, last))
    return frame, outages


def test_each_outage_is_one_incident_and_a_kill_9_continues_it(kafka, stream_workers, trained_model_dir, tmp_path):
    readings, outages = with_outages(simulate_fleet(FLEET).readings)
    topics = kafka.fresh_topics(partitions=4)
    app_id = f"incidents-{os.urandom(3).hex()}"
    # the kill falls inside the first outage: after its third zero reading
    meter, first, _ = outages[0]
    cut_time = first + pd.Timedelta(hours=2)
    before, after = readings[readings["timestamp"] <= cut_time], readings[readings["timestamp"] > cut_time]

    with ReadingProducer(kafka.connection, topics) as producer:
        producer.send_frame(before, batch_by_feeder=True)
    worker = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="first")
    worker.wait_for("wattsup_stream_readings_processed_total", len(before), timeout=180)
    wait_for_zero_lag(kafka, app_id, topics.readings, worker)
    opened = wait_until(lambda: [r for r in read_incidents(kafka, topics.incidents)
                                 if r["meter_id"] == meter and r["kind"] == "outage"],
                        60, f"the outage of {meter} to open an incident")
    assert {r["status"] for r in opened} == {"open"}
    (incident_id,) = {r["incident_id"] for r in opened}
    worker.kill_9()

    # the rest in two deliveries, the second from the middle of the last outage: every outage is seen
    # by the worker part before and part after a batch boundary, so each opens, grows and closes
    middle = outages[-1][1] + pd.Timedelta(hours=2)
    successor = stream_workers.start(topics, trained_model_dir, app_id=app_id, name="second")
    for part in (after[after["timestamp"] <= middle], after[after["timestamp"] > middle]):
        processed = successor.metric("wattsup_stream_readings_processed_total")
        with ReadingProducer(kafka.connection, topics) as producer:
            producer.send_frame(part, batch_by_feeder=True)
        successor.wait_for("wattsup_stream_readings_processed_total", processed + len(part), timeout=180)
    wait_for_zero_lag(kafka, app_id, topics.readings, successor)
    successor.stop()

    records = read_incidents(kafka, topics.incidents)
    for meter, first, last in outages:
        mine = [r for r in records if r["meter_id"] == meter and r["kind"] == "outage"]
        ids = {r["incident_id"] for r in mine}
        assert len(ids) == 1, f"{meter}: one outage, incidents {ids}: {mine}"
        events = [r["event"] for r in mine]
        assert events[0] == "opened" and events[-1] == "closed" and events.count("opened") == 1, (meter, events)
        assert events.count("closed") == 1 and len(events) >= 3, events  # it grew between opening and closing
        revisions = [r["revision"] for r in mine]
        assert revisions == sorted(set(revisions)), revisions
        final = mine[-1]
        assert final["closed_by"] == "recovered" and final["ended"] > final["last_seen"]
        assert first.value // 1_000_000 <= final["started"] <= final["last_seen"] <= last.value // 1_000_000
        assert final["energy_delta_kwh"] < 0  # a shortfall against the baseline
        assert final["causes"] and final["peak_severity"] in ("WARNING", "CRITICAL", "INFO")
    continued = [r for r in records if r["meter_id"] == outages[0][0] and r["kind"] == "outage"]
    assert {r["incident_id"] for r in continued} == {incident_id}, "the successor continued the same incident"
    # every incident ever opened on the topic closed or is still open exactly once
    for ident in {r["incident_id"] for r in records}:
        events = [r["event"] for r in records if r["incident_id"] == ident]
        assert events.count("opened") == 1 and events.count("closed") <= 1, (ident, events)

    # The dashboard, alerting per incident: one webhook on each opening and one on each closing.
    settings = DashboardSettings(database_url=f"sqlite:///{tmp_path / 'dashboard.db'}", kafka=kafka.connection,
                                 topics=topics, model_dir=tmp_path / "models", alert_on="incidents",
                                 webhook_allowed_hosts="127.0.0.1", consume=False)
    with webhook_receiver() as receiver:
        rules_app = create_app(settings)
        with TestClient(rules_app) as client:  # the rule exists before anything is ingested
            auth = {"Authorization": f"Bearer {create_token(rules_app.state.service.sessions, 'ops')}"}
            assert client.post("/api/v1/alert-rules", headers=auth, json={
                "name": "outages", "min_severity": "INFO", "webhook_url": receiver.url}).status_code == 201
        with TestClient(create_app(settings.model_copy(update={"consume": True}))) as client:
            outage_ids = {r["incident_id"] for r in records if r["kind"] == "outage"
                          and r["meter_id"] in {m for m, _, _ in outages}}
            wait_until(lambda: {(b["incident"]["incident_id"], b["event"]) for b in receiver.received
                                if "incident" in b} >= {(i, e) for i in outage_ids for e in ("opened", "closed")},
                       120, "the outages' opening and closing alerts")
            listed = client.get("/api/v1/incidents", params={"kind": "outage", "state": "closed"}).json()
            assert outage_ids <= {i["incident_id"] for i in listed["items"]}
        alerts = [(b["incident"]["incident_id"], b["event"]) for b in receiver.received if "incident" in b]
        for ident in outage_ids:
            mine = [event for i, event in alerts if i == ident]
            assert mine.count("opened") == 1 and mine.count("closed") == 1, (ident, mine)
        assert not [b for b in receiver.received if "anomaly" in b], "never an alert per reading"
