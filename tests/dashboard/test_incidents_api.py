"""Incidents in the dashboard: stored from the topic's records (newest revision wins), listed open first
with filters, shown with their anomalies; suppressed anomalies only on request; marking needs sign-in."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.settings import DashboardSettings
from dashboard.store import IngestBatch, incident_row, store_batch
from tests.dashboard.incident_records import anomaly, incident

ID_A, ID_B, ID_C = "inc-" + "a" * 20, "inc-" + "b" * 20, "inc-" + "c" * 20


@pytest.fixture
def client(tmp_path):
    settings = DashboardSettings(database_url=f"sqlite:///{tmp_path / 'd.db'}")
    app = create_app(settings, consume=False)
    with TestClient(app) as c:
        service = app.state.service
        with service.sessions.begin() as session:
            store_batch(session, IngestBatch(
                anomalies=[anomaly("M1", 0), anomaly("M1", 1), anomaly("M1", 2, suppressed_by="feedback_scope",
                                                                         kind="spike")],
                incidents=[incident_row(incident(ID_A, readings=1)), incident_row(incident(ID_A, revision=4, readings=2)),
                           incident_row(incident(ID_B, meter="M2", feeder="F2", kind="spike", status="closed",
                                                 revision=3)),
                           incident_row(incident(ID_C, meter="M3", status="closed", revision=5, readings=2))]))
        with service.sessions.begin() as session:  # a re-delivered older revision changes nothing
            store_batch(session, IngestBatch(incidents=[incident_row(incident(ID_A, revision=2, readings=1))]))
        yield c


def test_incidents_are_listed_open_first_with_their_newest_revision(client):
    body = client.get("/api/v1/incidents").json()
    assert body["total"] == 3
    assert [i["incident_id"] for i in body["items"]][0] == ID_A
    first = body["items"][0]
    assert (first["status"], first["revision"], first["readings"]) == ("open", 4, 2)
    assert first["duration_seconds"] == pytest.approx(2 * 900)
    assert first["energy_delta_kwh"] == pytest.approx(-1.0) and first["ended"] is None


def test_incident_filters(client):
    def ids(**params) -> list[str]:
        return [i["incident_id"] for i in client.get("/api/v1/incidents", params=params).json()["items"]]

    assert set(ids(state="closed")) == {ID_B, ID_C}
    assert ids(feeder_id="F2") == [ID_B]
    assert ids(kind="spike") == [ID_B]
    assert set(ids(kind="outage,spike")) == {ID_A, ID_B, ID_C}
    assert client.get("/api/v1/incidents", params={"kind": "nonsense"}).status_code == 422
    assert client.get("/api/v1/incidents", params={"state": "ajar"}).status_code == 422


def test_one_incident_with_its_anomalies_and_hostile_ids_refused(client):
    body = client.get(f"/api/v1/incidents/{ID_A}").json()
    assert body["incident"]["incident_id"] == ID_A
    assert [(a["meter_id"], a["kind"]) for a in body["anomalies"]] == [("M1", "outage")] * 2  # the window, its kind
    assert client.get("/api/v1/incidents/" + "inc-" + "d" * 20).status_code == 404
    assert client.get('/api/v1/incidents/"><img src=x>').status_code in (404, 422)


def test_suppressed_anomalies_only_on_request(client):
    standing = client.get("/api/v1/anomalies").json()
    assert standing["total"] == 2 and all(a["suppressed_by"] is None for a in standing["items"])
    everything = client.get("/api/v1/anomalies", params={"include_suppressed": "true"}).json()
    assert everything["total"] == 3
    assert [a["suppressed_by"] for a in everything["items"] if a["kind"] == "spike"] == ["feedback_scope"]


def test_marking_needs_sign_in(client):
    answer = client.post(f"/api/v1/incidents/{ID_A}/feedback", json={"verdict": "false_alarm"})
    assert answer.status_code == 401


def test_open_incidents_are_a_metric(client):
    text = client.get("/metrics").text
    assert 'wattsup_dashboard_incidents_open{kind="outage",severity="WARNING"} 1.0' in text
    assert 'wattsup_dashboard_incidents_open{kind="stuck",severity="CRITICAL"} 0.0' in text  # none open is data too


def test_a_mark_the_broker_never_acknowledged_is_503_not_202(tmp_path):
    """No broker at the configured address: the mark expires in the producer, and the page must hear so
    (503 with Retry-After), not "accepted" (a failed delivery leaves the queue as a delivered one does)."""
    import time

    from dashboard.auth import create_token
    from deploy.kafka.launcher import free_port
    from foundation.kafka_settings import KafkaConnection

    settings = DashboardSettings(database_url=f"sqlite:///{tmp_path / 'd.db'}", ingest_ack_timeout_seconds=1,
                                 kafka=KafkaConnection(bootstrap_servers=f"127.0.0.1:{free_port()}"))
    app = create_app(settings, consume=False)
    with TestClient(app) as c:
        service = app.state.service
        with service.sessions.begin() as session:
            store_batch(session, IngestBatch(incidents=[incident_row(incident(ID_A))]))
        token = create_token(service.sessions, "operator")
        began = time.monotonic()
        answer = c.post(f"/api/v1/incidents/{ID_A}/feedback", json={"verdict": "false_alarm", "days": 3},
                        headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] and "retry" in answer.json()["detail"]
        assert time.monotonic() - began < 10


def test_the_pages_incident_logic_and_settled_refresh():
    """incident-logic.js (durations, energy, chart window, the feedback body) and refresh.js (one load per
    burst of events) run by node's own test runner."""
    import shutil
    import subprocess
    from pathlib import Path

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (make dashboard-assets needs it too)")
    scripts = [str(Path(__file__).with_name("js") / name) for name in ("incidents.test.mjs", "refresh.test.mjs")]
    result = subprocess.run([node, "--test", *scripts], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "# pass 6" in result.stdout and "# fail 0" in result.stdout
