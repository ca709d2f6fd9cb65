"""Alerts per incident (the default, WATTSUP_DASHBOARD_ALERT_ON=incidents): once on opening, once per escalation,
once on closing, whatever the re-deliveries; never per reading; the rules' severity, quiet hours and rate limit
apply; an event stored but not checked before a restart is checked after it."""

from __future__ import annotations

import pytest

from dashboard.store import incident_row
from tests.dashboard.incident_records import anomaly, incident
from tests.waiting import wait_until
from tests.webhook_receiver import webhook_receiver

ID = "inc-" + "e" * 20


@pytest.fixture
def receiver():
    with webhook_receiver() as server:
        yield server


def store(dash, *records: dict, anomalies: tuple = (), check: bool = True) -> None:
    from dashboard.store import IngestBatch, store_batch

    with dash.service.sessions.begin() as session:
        stored = store_batch(session, IngestBatch(incidents=[incident_row(r) for r in records],
                                                  anomalies=list(anomalies)))
    if check:  # what the service does with every stored batch (the ingest's callback)
        dash.service.alerts.submit([*stored.incident_events, *stored.anomalies])
        assert dash.service.alerts.wait_idle()


def test_an_incident_alerts_on_opening_escalation_and_closing_once_each(dashboard_factory, receiver):
    dash = dashboard_factory(webhook_allowed_hosts="127.0.0.1")
    url = receiver.url
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "ops", "min_severity": "WARNING",
                                                                      "webhook_url": url})
    opened = incident(ID, readings=1, revision=2, severity="WARNING")
    store(dash, opened, anomalies=[anomaly("M1", 0)])
    store(dash, opened)  # re-delivered
    store(dash, incident(ID, readings=2, revision=4, severity="WARNING"), anomalies=[anomaly("M1", 1)])  # grew
    store(dash, incident(ID, readings=3, revision=6, severity="CRITICAL"))  # escalated
    store(dash, incident(ID, status="closed", readings=3, revision=7, severity="CRITICAL"))
    store(dash, incident(ID, status="closed", readings=3, revision=7, severity="CRITICAL"))  # re-delivered
    events = [(r["event"], r["incident"]["incident_id"], r["incident"]["status"]) for r in receiver.received]
    assert events == [("opened", ID, "open"), ("escalated:CRITICAL", ID, "open"), ("closed", ID, "closed")]
    history = dash.client.get("/api/v1/alerts", headers=dash.auth).json()
    assert sorted(a["incident_event"] for a in history["items"]) == ["closed", "escalated:CRITICAL", "opened"]
    assert all(a["anomaly_id"] is None and a["status"] == "sent" for a in history["items"])


def test_the_rules_severity_applies_to_the_incidents_peak(dashboard_factory, receiver):
    dash = dashboard_factory(webhook_allowed_hosts="127.0.0.1")
    url = receiver.url
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "critical only",
                                                                      "min_severity": "CRITICAL", "webhook_url": url})
    store(dash, incident(ID, readings=1, revision=2, severity="WARNING"))
    assert receiver.received == []
    store(dash, incident(ID, readings=2, revision=4, severity="CRITICAL"))
    assert [r["event"] for r in receiver.received] == ["escalated:CRITICAL"]


def test_opened_and_closed_between_two_polls_still_alert_both(dashboard_factory, receiver):
    dash = dashboard_factory(webhook_allowed_hosts="127.0.0.1")
    url = receiver.url
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "all", "min_severity": "INFO",
                                                                      "webhook_url": url})
    store(dash, incident(ID, readings=2, revision=2), incident(ID, status="closed", readings=2, revision=5))
    assert [r["event"] for r in receiver.received] == ["opened", "closed"]


def test_incident_events_stored_but_not_checked_before_a_restart_are_alerted_after_it(dashboard_factory, receiver,
                                                                                      tmp_path):
    url = f"sqlite:///{tmp_path / 'shared' / 'wattsup.db'}"
    first = dashboard_factory(database_url=url, webhook_allowed_hosts="127.0.0.1")
    first.client.post("/api/v1/alert-rules", headers=first.auth, json={"name": "all", "min_severity": "INFO",
                                                                        "webhook_url": receiver.url})
    store(first, incident(ID, readings=1, revision=2))
    # stored, then the process stopped before the dispatcher saw it
    store(first, incident(ID, status="closed", readings=1, revision=3), check=False)
    first.client.__exit__(None, None, None)
    assert [r["event"] for r in receiver.received] == ["opened"]

    second = dashboard_factory(database_url=url, webhook_allowed_hosts="127.0.0.1")
    assert second.service.alerts.wait_idle()
    assert [r["event"] for r in receiver.received] == ["opened", "closed"]
    second.client.__exit__(None, None, None)

    third = dashboard_factory(database_url=url, webhook_allowed_hosts="127.0.0.1")  # nothing left to catch up on
    assert third.service.alerts.wait_idle()
    assert len(receiver.received) == 2


def test_a_failed_check_of_an_incident_event_is_tried_again(dashboard_factory, receiver, monkeypatch):
    dash = dashboard_factory(webhook_allowed_hosts="127.0.0.1")
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "all", "min_severity": "INFO",
                                                                      "webhook_url": receiver.url})
    alerts = dash.service.alerts
    real = alerts.process_incident_event
    failures = []

    def locked_once(event):
        if not failures:
            failures.append(event["alert_event"])
            raise RuntimeError("database is locked")
        real(event)

    monkeypatch.setattr(alerts, "process_incident_event", locked_once)
    store(dash, incident(ID, readings=1, revision=2))
    assert failures == ["opened"] and alerts.checks_awaiting_retry == 1
    wait_until(lambda: receiver.received, 30, "the retried check's webhook")  # retried after 1 s
    assert [r["event"] for r in receiver.received] == ["opened"]
    # the webhook goes out during the check, which counts as done once it returns: a moment later
    wait_until(lambda: alerts.checks_awaiting_retry == 0, 10, "the retried check no longer awaiting a retry")
