"""Alert rules per anomaly (``alert_on`` anomalies; the default, per incident, is in test_incident_alerts.py)
end to end against a real local SMTP server (aiosmtpd) and a real local HTTP receiver."""

from __future__ import annotations

import json
from datetime import datetime
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller

from dashboard.alerts import in_quiet_hours
from dashboard.models import AlertRule
from deploy.kafka.launcher import free_port
from tests.dashboard.conftest import QUARTER, T0, anomaly_record
from tests.webhook_receiver import WebhookReceiver


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's handler name
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp_server():
    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, mailbox
    controller.stop()


class _Receiver(WebhookReceiver):
    """Keeps each request's content type beside its body."""

    def keep(self, headers, body: bytes) -> None:
        self.received.append({"content_type": headers["Content-Type"], "body": json.loads(body)})


@pytest.fixture
def receiver_factory():
    servers = []

    def start(status: int = 200) -> _Receiver:
        server = _Receiver(status).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def dash(dashboard_factory):
    """The receivers here listen on 127.0.0.1, which webhooks reach only when listed."""
    return dashboard_factory(alert_on="anomalies", webhook_allowed_hosts="127.0.0.1")


def _alerts(dash):
    return dash.client.get("/api/v1/alerts", params={"limit": 1000}, headers=dash.auth).json()


def test_matching_anomaly_sends_webhook_and_email(dashboard_factory, smtp_server, receiver_factory):
    controller, mailbox = smtp_server
    receiver = receiver_factory()
    dash = dashboard_factory(alert_on="anomalies", smtp_host="127.0.0.1", smtp_port=controller.port, smtp_sender="wattsup@test.local",
                             webhook_allowed_hosts="127.0.0.1")
    rule = dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "feeder 1 warnings", "min_severity": "WARNING", "feeder_id": "F1",
        "webhook_url": receiver.url, "email_to": "ops@test.local"}).json()
    stored = dash.store(anomalies=[
        anomaly_record("M1", T0, "CRITICAL", feeder="F1"),
        anomaly_record("M2", T0, "INFO", feeder="F1"),      # below the rule's severity
        anomaly_record("M3", T0, "CRITICAL", feeder="F2"),  # another feeder
    ])
    dash.service.alerts.submit(stored.anomalies)
    assert dash.service.alerts.wait_idle()

    assert len(receiver.received) == 1
    hook = receiver.received[0]
    assert hook["content_type"] == "application/json"
    assert hook["body"]["rule"] == {"id": rule["id"], "name": "feeder 1 warnings"}
    assert hook["body"]["anomaly"]["meter_id"] == "M1" and hook["body"]["anomaly"]["causes"]
    assert len(mailbox.messages) == 1
    recipients, mail = mailbox.messages[0]
    assert recipients == ["ops@test.local"] and mail["From"] == "wattsup@test.local"
    assert "CRITICAL anomaly on meter M1" in mail["Subject"]
    assert "usage 5x the usual" in mail.get_payload()

    history = _alerts(dash)
    from dashboard.api_models import AlertPage

    AlertPage.model_validate(history)
    assert history["total"] == 2
    assert sorted((a["channel"], a["status"], a["meter_id"]) for a in history["items"]) == [
        ("email", "sent", "M1"), ("webhook", "sent", "M1")]
    assert all(a["rule_name"] == "feeder 1 warnings" and a["anomaly_id"] == stored.anomalies[0]["id"]
               for a in history["items"])
    metrics = dash.client.get("/metrics").text
    assert 'wattsup_dashboard_alerts_total{channel="webhook",status="sent"} 1.0' in metrics
    assert 'wattsup_dashboard_alerts_total{channel="email",status="sent"} 1.0' in metrics


def test_the_same_anomaly_is_never_alerted_twice(dash, receiver_factory):
    receiver = receiver_factory()
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "all", "min_severity": "INFO",
                                                                      "webhook_url": receiver.url})
    stored = dash.store(anomalies=[anomaly_record("M1", T0)])
    dash.service.alerts.submit(stored.anomalies)
    dash.service.alerts.submit(stored.anomalies)  # e.g. handed over again after a restart
    assert dash.service.alerts.wait_idle()
    assert len(receiver.received) == 1
    assert _alerts(dash)["total"] == 1


def test_storm_is_rate_limited_per_meter_and_rest_suppressed(dashboard_factory, receiver_factory):
    receiver = receiver_factory()
    dash = dashboard_factory(alert_on="anomalies", alert_rate_per_hour=3, webhook_allowed_hosts="127.0.0.1")
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "storm", "min_severity": "INFO",
                                                                      "webhook_url": receiver.url})
    stored = dash.store(anomalies=[anomaly_record("M1", T0 + i * QUARTER) for i in range(10)]
                        + [anomaly_record("M2", T0 + i * QUARTER) for i in range(2)])
    dash.service.alerts.submit(stored.anomalies)
    assert dash.service.alerts.wait_idle()
    by_meter = {}
    for a in _alerts(dash)["items"]:
        by_meter.setdefault(a["meter_id"], []).append(a["status"])
    assert sorted(by_meter["M1"]) == ["sent"] * 3 + ["suppressed"] * 7
    assert by_meter["M2"] == ["sent", "sent"]  # another meter is not held back by M1's storm
    assert len(receiver.received) == 5
    suppressed = next(a for a in _alerts(dash)["items"] if a["status"] == "suppressed")
    assert "rate limit" in suppressed["detail"]


def test_failed_delivery_is_recorded_not_raised(dashboard_factory, receiver_factory):
    broken = receiver_factory(status=500)
    dash = dashboard_factory(alert_on="anomalies", smtp_host="127.0.0.1", smtp_port=free_port(),  # nothing listens there
                             webhook_allowed_hosts="127.0.0.1", alert_delivery_attempts=1)  # retries: test_hardening
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "broken", "min_severity": "INFO", "webhook_url": broken.url, "email_to": "ops@test.local"})
    stored = dash.store(anomalies=[anomaly_record("M1", T0)])
    dash.service.alerts.submit(stored.anomalies)
    assert dash.service.alerts.wait_idle()
    items = {a["channel"]: a for a in _alerts(dash)["items"]}
    assert items["webhook"]["status"] == "failed" and items["webhook"]["detail"] == "delivery failed (status 500)"
    assert items["email"]["status"] == "failed" and items["email"]["detail"] == "delivery failed: connection error"
    # the dispatcher is still alive and handles the next anomaly
    more = dash.store(anomalies=[anomaly_record("M2", T0)])
    dash.service.alerts.submit(more.anomalies)
    assert dash.service.alerts.wait_idle()
    assert _alerts(dash)["total"] == 4


def test_disabled_rules_and_meter_rules_only_match_their_anomalies(dash, receiver_factory):
    receiver = receiver_factory()
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "off", "min_severity": "INFO",
                                                                      "webhook_url": receiver.url, "enabled": False})
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "m2", "min_severity": "INFO",
                                                                      "meter_id": "M2", "webhook_url": receiver.url})
    stored = dash.store(anomalies=[anomaly_record("M1", T0), anomaly_record("M2", T0)])
    dash.service.alerts.submit(stored.anomalies)
    assert dash.service.alerts.wait_idle()
    assert [r["body"]["anomaly"]["meter_id"] for r in receiver.received] == ["M2"]


def test_quiet_hours_suppress_and_wrap_midnight(dash, receiver_factory):
    night = AlertRule(quiet_start="22:00", quiet_end="06:00")
    assert in_quiet_hours(night, datetime(2026, 11, 25, 23, 30))
    assert in_quiet_hours(night, datetime(2026, 11, 25, 5, 59))
    assert not in_quiet_hours(night, datetime(2026, 11, 25, 6, 0))
    assert not in_quiet_hours(night, datetime(2026, 11, 25, 12, 0))
    lunch = AlertRule(quiet_start="12:00", quiet_end="13:00")
    assert in_quiet_hours(lunch, datetime(2026, 11, 25, 12, 30)) and not in_quiet_hours(lunch, datetime(2026, 11, 25, 13, 1))
    assert not in_quiet_hours(AlertRule(), datetime(2026, 11, 25, 12, 0))

    receiver = receiver_factory()
    # quiet from the start of the current hour to two hours later: covers now, whatever the clock says
    now = datetime.now().astimezone(dash.service.alerts.zone)
    start = now.replace(minute=0).strftime("%H:%M")
    end = f"{(now.hour + 2) % 24:02d}:00"
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={
        "name": "quiet", "min_severity": "INFO", "webhook_url": receiver.url, "quiet_hours": {"start": start, "end": end}})
    stored = dash.store(anomalies=[anomaly_record("M1", T0)])
    dash.service.alerts.submit(stored.anomalies)
    assert dash.service.alerts.wait_idle()
    assert receiver.received == []
    [alert] = _alerts(dash)["items"]
    assert alert["status"] == "suppressed" and "quiet hours" in alert["detail"]


def test_anomalies_stored_but_not_checked_before_a_restart_are_alerted_after_it(dashboard_factory, receiver_factory,
                                                                                tmp_path):
    receiver = receiver_factory()
    url = f"sqlite:///{tmp_path / 'shared' / 'wattsup.db'}"
    first = dashboard_factory(alert_on="anomalies", database_url=url, webhook_allowed_hosts="127.0.0.1")
    first.client.post("/api/v1/alert-rules", headers=first.auth, json={"name": "all", "min_severity": "INFO",
                                                                        "webhook_url": receiver.url})
    checked = first.store(anomalies=[anomaly_record("M1", T0)])
    first.service.alerts.submit(checked.anomalies)
    assert first.service.alerts.wait_idle()
    # stored, then the process stopped before the dispatcher saw them
    unchecked = first.store(anomalies=[anomaly_record("M2", T0), anomaly_record("M3", T0)])
    first.client.__exit__(None, None, None)
    assert [r["body"]["anomaly"]["meter_id"] for r in receiver.received] == ["M1"]

    second = dashboard_factory(alert_on="anomalies", database_url=url, webhook_allowed_hosts="127.0.0.1")
    assert second.service.alerts.wait_idle()
    assert sorted(r["body"]["anomaly"]["meter_id"] for r in receiver.received) == ["M1", "M2", "M3"]
    assert {a["anomaly_id"] for a in _alerts(second)["items"]} == {a["id"] for a in checked.anomalies + unchecked.anomalies}
    second.client.__exit__(None, None, None)

    third = dashboard_factory(alert_on="anomalies", database_url=url, webhook_allowed_hosts="127.0.0.1")  # nothing left to catch up on
    assert third.service.alerts.wait_idle()
    assert len(receiver.received) == 3


def test_a_new_database_does_not_alert_on_history(dashboard_factory, receiver_factory, tmp_path):
    from dashboard.alerts import AlertDispatcher

    receiver = receiver_factory()
    dash = dashboard_factory(alert_on="anomalies", consume=False, webhook_allowed_hosts="127.0.0.1")
    dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "all", "min_severity": "INFO",
                                                                      "webhook_url": receiver.url})
    dash.store(anomalies=[anomaly_record("M1", T0)])
    with dash.service.sessions.begin() as session:  # as if this database had never run a dispatcher
        from dashboard.models import AlertCursor

        session.query(AlertCursor).delete()
    fresh = AlertDispatcher(dash.settings, dash.service.sessions, dash.service.metrics)
    fresh.start()
    try:
        assert fresh.wait_idle()
        assert receiver.received == []
    finally:
        fresh.stop()


def test_email_over_starttls_with_login(dashboard_factory, tmp_path):
    import ssl

    import trustme
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"alerts", b"s3cret")
        return AuthResult(success=ok)

    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), tls_context=server_context,
                            require_starttls=True, auth_required=True, authenticator=authenticator)
    controller.start()
    try:
        def send_with(**smtp):
            dash = dashboard_factory(alert_on="anomalies", smtp_host="127.0.0.1", smtp_port=controller.port, smtp_starttls=True,
                                     smtp_timeout_seconds=3, alert_delivery_attempts=1, **smtp)
            dash.client.post("/api/v1/alert-rules", headers=dash.auth, json={"name": "tls", "min_severity": "INFO",
                                                                              "email_to": "ops@test.local"})
            stored = dash.store(anomalies=[anomaly_record("M1", T0)])
            dash.service.alerts.submit(stored.anomalies)
            assert dash.service.alerts.wait_idle()
            return _alerts(dash)["items"][0]

        sent = send_with(smtp_ca_file=ca_file, smtp_user="alerts", smtp_password="s3cret")
        assert sent["status"] == "sent", sent["detail"]
        assert len(mailbox.messages) == 1
        wrong_password = send_with(smtp_ca_file=ca_file, smtp_user="alerts", smtp_password="nope")
        assert wrong_password["status"] == "failed"  # refused (aiosmtpd answers 535 or drops the session)
        untrusted = send_with(smtp_user="alerts", smtp_password="s3cret")  # the system CAs do not know ours
        assert untrusted["status"] == "failed" and "certificate is not trusted" in untrusted["detail"]
        assert len(mailbox.messages) == 1
    finally:
        controller.stop()


def test_email_names_the_forecast_and_the_usual_apart():
    """Schema version 2: expected is the forecast's (or absent); the baseline is the meter's usual usage."""
    from dashboard.alerts import email_text

    def body(**fields) -> str:
        anomaly = {**anomaly_record("M1", T0, **fields), "id": 1, "timestamp": "2026-11-18T11:06:40Z"}
        return email_text(AlertRule(name="r"), anomaly)[1]

    with_forecast = body()
    assert "Expected (forecast): 1.000 kWh" in with_forecast and "Usual for this hour: 1.200 kWh" in with_forecast
    without = body(expected=None, lower=None, upper=None, residual=None, band_residual=None, baseline=0.8)
    assert "Expected" not in without and "Usual for this hour: 0.800 kWh" in without
    assert "Observed: 5.000 kWh" in without
