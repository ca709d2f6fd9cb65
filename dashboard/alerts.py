"""Alert rules applied to every newly stored anomaly: webhooks and e-mails, de-duplicated and rate-limited.

Each decision is one row in ``alerts`` (unique per rule, anomaly and channel), written *before*
anything is sent: a re-delivered anomaly, or the same one after a restart, finds the row and is
never alerted twice. Per rule and meter at most ``alert_rate_per_hour`` alerts are sent an hour;
the rest, and everything inside a rule's quiet hours, are recorded as ``suppressed``. Sending
happens in the dispatcher's own thread with timeouts; a failure is recorded as ``failed`` and
never reaches the ingest.
"""

from __future__ import annotations

import json
import logging
import queue
import smtplib
import ssl
import threading
from datetime import datetime, time as dtime, timezone
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dashboard.metrics import DashboardMetrics
from dashboard.models import Alert, AlertCursor, AlertRule, Anomaly
from dashboard.settings import DashboardSettings
from dashboard.store import SEVERITIES, _insert, anomaly_json
from dashboard.timeutil import HOUR_MS, iso, now_ms
from dashboard.webhooks import DestinationRefused, WebhookPolicy

log = logging.getLogger(__name__)

CATCH_UP_LIMIT = 10_000


def rule_json(rule: AlertRule) -> dict[str, Any]:
    quiet = {"start": rule.quiet_start, "end": rule.quiet_end} if rule.quiet_start and rule.quiet_end else None
    return {"id": rule.id, "name": rule.name, "min_severity": rule.min_severity, "meter_id": rule.meter_id,
            "feeder_id": rule.feeder_id, "quiet_hours": quiet, "webhook_url": rule.webhook_url,
            "email_to": rule.email_to, "enabled": rule.enabled}


def alert_json(alert: Alert) -> dict[str, Any]:
    return {"id": alert.id, "rule_id": alert.rule_id, "rule_name": alert.rule_name, "anomaly_id": alert.anomaly_id,
            "meter_id": alert.meter_id, "channel": alert.channel, "status": alert.status, "detail": alert.detail,
            "sent_at": iso(alert.sent_at_ms)}


def rule_matches(rule: AlertRule, anomaly: dict[str, Any]) -> bool:
    if not rule.enabled:
        return False
    if SEVERITIES.index(anomaly["severity"]) < SEVERITIES.index(rule.min_severity):
        return False
    if rule.meter_id and rule.meter_id != anomaly["meter_id"]:
        return False
    if rule.feeder_id and rule.feeder_id != anomaly["feeder_id"]:
        return False
    return True


def in_quiet_hours(rule: AlertRule, moment: datetime) -> bool:
    """Whether ``moment`` (already in the configured zone) falls in the rule's quiet hours; they may wrap midnight."""
    if not rule.quiet_start or not rule.quiet_end:
        return False
    start, end, now = dtime.fromisoformat(rule.quiet_start), dtime.fromisoformat(rule.quiet_end), moment.time()
    if start <= end:
        return start <= now < end
    return now >= start or now < end


def email_text(rule: AlertRule, anomaly: dict[str, Any]) -> tuple[str, str]:
    subject = (f"[WattsUp] {anomaly['severity']} anomaly on meter {anomaly['meter_id']} "
               f"(feeder {anomaly['feeder_id']}) at {anomaly['timestamp']}")
    lines = [f"Rule: {rule.name}", f"Meter: {anomaly['meter_id']}  Feeder: {anomaly['feeder_id']}",
             f"Time: {anomaly['timestamp']}", f"Observed: {anomaly['observed']:.3f} kWh"]
    # The forecast and the meter's usual usage are different numbers; each is named so a reader
    # never takes the one for the other (schema version 1 anomalies may carry the usual in expected).
    if anomaly.get("expected") is not None:
        lines.append(f"Expected (forecast): {anomaly['expected']:.3f} kWh")
    if anomaly.get("baseline") is not None:
        lines.append(f"Usual for this hour: {anomaly['baseline']:.3f} kWh")
    lines.append(f"Severity: {anomaly['severity']}  Score: {anomaly['score']:.3f}  Kind: {anomaly.get('kind') or '-'}")
    lines += ["", "Why:"] + [f"  - {c['text']}" for c in anomaly.get("causes") or []]
    return subject, "\n".join(lines) + "\n"


class DeliveryStatusError(RuntimeError):
    """The receiver answered, but not with a 2xx."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def failure_detail(exc: BaseException) -> str:
    """What a failed delivery records (and the API shows): the kind of failure, never its low-level text."""
    if isinstance(exc, DeliveryStatusError):
        return f"delivery failed (status {exc.status})"
    if isinstance(exc, DestinationRefused):
        return "delivery refused: the destination is not allowed (see WATTSUP_DASHBOARD_WEBHOOK_ALLOWED_HOSTS)"
    if isinstance(exc, NoSmtpServer):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "delivery failed: the server's TLS certificate is not trusted"
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "delivery failed: the SMTP server refused the login"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "delivery failed: the SMTP server refused the recipient"
    if isinstance(exc, (httpx.TransportError, OSError)):
        return "delivery failed: connection error"
    return "delivery failed"


class NoSmtpServer(RuntimeError):
    pass


class AlertDispatcher:
    """Matches anomalies to rules in a background thread; :meth:`submit` never blocks the caller."""

    def __init__(self, settings: DashboardSettings, sessions: sessionmaker[Session], metrics: DashboardMetrics) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.zone = ZoneInfo(settings.timezone)
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self.processed = 0
        self.webhooks = WebhookPolicy(settings.webhook_allowed_hosts)
        # No redirects (a 3xx could point anywhere) and no proxy from the environment (it would see the secrets).
        self._http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False)

    def start(self) -> None:
        self._catch_up()
        self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._thread.start()

    def _catch_up(self) -> None:
        """Queue the anomalies stored after the last one checked (e.g. just before a crash).

        On a new database the cursor starts at the newest anomaly: rules apply to anomalies
        stored from now on, not to history.
        """
        with self.sessions.begin() as session:
            cursor = session.get(AlertCursor, 1)
            if cursor is None:
                newest = session.scalar(select(func.max(Anomaly.id))) or 0
                session.add(AlertCursor(id=1, last_anomaly_id=newest))
                return
            pending = [anomaly_json(a) for a in session.scalars(
                select(Anomaly).where(Anomaly.id > cursor.last_anomaly_id).order_by(Anomaly.id).limit(CATCH_UP_LIMIT))]
        if pending:
            log.info("checking %d anomalies stored after the last one checked against the alert rules", len(pending))
            self.submit(pending)

    def _advance_cursor(self, anomaly_id: int) -> None:
        with self.sessions.begin() as session:
            session.execute(update(AlertCursor).where(AlertCursor.id == 1, AlertCursor.last_anomaly_id < anomaly_id)
                            .values(last_anomaly_id=anomaly_id))

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(30)
        self._http.close()

    def submit(self, anomalies: list[dict[str, Any]]) -> None:
        try:
            self._queue.put_nowait(anomalies)
        except queue.Full:
            log.error("alert queue full: %d anomalies not checked against alert rules", len(anomalies))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted so far is handled (tests use it)."""
        done = threading.Event()
        self._queue.put([{"__marker__": done}])
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            for anomaly in item:
                if "__marker__" in anomaly:
                    anomaly["__marker__"].set()
                    continue
                try:
                    self.process(anomaly)
                except Exception:  # noqa: BLE001 - one bad anomaly or rule must not stop alerting
                    log.exception("alerting on anomaly %s failed", anomaly.get("id"))
                self.processed += 1
            ids = [a["id"] for a in item if "id" in a]
            if ids:
                try:
                    self._advance_cursor(max(ids))
                except Exception:  # noqa: BLE001 - worst case these are checked again (harmlessly) at restart
                    log.exception("could not advance the alert cursor")

    # -- one anomaly --------------------------------------------------------------------
    def process(self, anomaly: dict[str, Any]) -> None:
        with self.sessions() as session:
            rules = [r for r in session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True)))
                     if rule_matches(r, anomaly)]
        for rule in rules:
            for channel, target in (("webhook", rule.webhook_url), ("email", rule.email_to)):
                if target:
                    self._decide_and_send(rule, anomaly, channel, target)

    def _claim(self, rule: AlertRule, anomaly: dict[str, Any], channel: str) -> tuple[int | None, str, str]:
        """Record the decision row; returns (alert id or None if already handled, status, detail)."""
        now = now_ms()
        with self.sessions.begin() as session:
            status, detail = "pending", ""
            local = datetime.fromtimestamp(now / 1000, tz=timezone.utc).astimezone(self.zone)
            if in_quiet_hours(rule, local):
                status, detail = "suppressed", f"quiet hours {rule.quiet_start}-{rule.quiet_end} {self.settings.timezone}"
            else:
                recent = session.scalar(
                    select(func.count()).select_from(Alert)
                    .where(Alert.rule_id == rule.id, Alert.meter_id == anomaly["meter_id"], Alert.channel == channel,
                           Alert.status.in_(("sent", "failed", "pending")), Alert.sent_at_ms > now - HOUR_MS))
                if (recent or 0) >= self.settings.alert_rate_per_hour:
                    status = "suppressed"
                    detail = (f"rate limit: {self.settings.alert_rate_per_hour} alerts per hour for meter "
                              f"{anomaly['meter_id']} reached")
            stmt = (_insert(session, Alert).values(
                rule_id=rule.id, rule_name=rule.name, anomaly_id=anomaly["id"], meter_id=anomaly["meter_id"],
                channel=channel, status=status, detail=detail, sent_at_ms=now)
                .on_conflict_do_nothing(index_elements=["rule_id", "anomaly_id", "channel"]).returning(Alert.id))
            alert_id = session.scalar(stmt)
        return alert_id, status, detail

    def _decide_and_send(self, rule: AlertRule, anomaly: dict[str, Any], channel: str, target: str) -> None:
        alert_id, status, detail = self._claim(rule, anomaly, channel)
        if alert_id is None:
            log.debug("rule %s already alerted on anomaly %s via %s", rule.id, anomaly["id"], channel)
            return
        if status == "pending":
            try:
                detail = self._send_webhook(rule, anomaly, target) if channel == "webhook" \
                    else self._send_email(rule, anomaly, target)
                status = "sent"
            except Exception as exc:  # noqa: BLE001 - every delivery failure is recorded, never raised
                status, detail = "failed", failure_detail(exc)
                # The log (operators only) gets the error; the stored detail, which the API shows, gets the
                # generic text: the URL carries secrets, and the low-level error text would tell a rule's
                # author what listens where (a port scanner).
                log.warning("alert %s of rule %s via %s failed: %s: %s", alert_id, rule.id, channel,
                            type(exc).__name__, str(exc)[:300])
            with self.sessions.begin() as session:
                session.execute(update(Alert).where(Alert.id == alert_id)
                                .values(status=status, detail=detail, sent_at_ms=now_ms()))
        self.metrics.alerts.labels(channel=channel, status=status).inc()

    def _send_webhook(self, rule: AlertRule, anomaly: dict[str, Any], url: str) -> str:
        destination = self.webhooks.check(url)  # again now: the name may resolve elsewhere than at creation
        payload = {"rule": {"id": rule.id, "name": rule.name}, "anomaly": anomaly}
        response = self._http.post(destination.url, content=json.dumps(payload), extensions=destination.extensions,
                                   headers={**destination.headers, "Content-Type": "application/json",
                                            "User-Agent": "wattsup-dashboard"})
        if not response.is_success:
            raise DeliveryStatusError(response.status_code)
        return f"HTTP {response.status_code}"

    def _send_email(self, rule: AlertRule, anomaly: dict[str, Any], to: str) -> str:
        s = self.settings
        if not s.smtp_host:
            raise NoSmtpServer("delivery failed: no SMTP server configured (WATTSUP_DASHBOARD_SMTP_HOST)")
        subject, body = email_text(rule, anomaly)
        message = EmailMessage()
        message["From"] = s.smtp_sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(body)
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_seconds) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=str(s.smtp_ca_file) if s.smtp_ca_file else None))
            if s.smtp_user and s.smtp_password:
                smtp.login(s.smtp_user, s.smtp_password.get_secret_value())
            refused = smtp.send_message(message)
        if refused:
            raise smtplib.SMTPRecipientsRefused(refused)
        return f"mailed via {s.smtp_host}:{s.smtp_port}"
