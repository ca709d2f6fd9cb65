"""Alert rules applied to every newly stored incident event, or anomaly: webhooks and e-mails, de-duplicated
and rate-limited.

Rules fire on what ``alert_on`` says: by default an incident's opening, its escalation to a higher
severity and its closing (one alarm per event, never one per reading); or every anomaly. Both are
checked in id order behind a cursor (:class:`~dashboard.models.AlertCursor`), so what was stored
just before a crash, or whose check failed, is checked again. Each decision is one row in ``alerts``
(unique per rule, anomaly and channel, or per rule, incident, event and channel), written *before*
anything is sent: a re-delivered record, or the same one after a restart, finds the row and is
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
import time
from datetime import datetime, timezone
from datetime import time as dtime
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from dashboard.metrics import DashboardMetrics
from dashboard.models import Alert, AlertCursor, AlertRule, Anomaly, Incident, IncidentEvent
from dashboard.settings import DashboardSettings
from dashboard.store import SEVERITIES, _insert, anomaly_json, incident_events_json, incident_json
from dashboard.timeutil import HOUR_MS, iso, now_ms
from dashboard.webhooks import DestinationRefused, WebhookPolicy

log = logging.getLogger(__name__)

CATCH_UP_LIMIT = 10_000
CHECK_RETRY_FIRST_SECONDS = 1.0
"""An anomaly or incident event whose check failed (the database locked or away) is checked again after
this, then after twice as long each time ..."""
CHECK_RETRY_MAX_SECONDS = 60.0
"""... up to this: it is never dropped, and the cursor stays before it until it is checked."""
IDLE_WAKE_SECONDS = 5.0
"""With nothing queued the dispatcher still wakes this often to look for deliveries due for a retry."""
PERMANENT = ("DestinationRefused", "NoSmtpServer")
"""Failures a retry cannot fix (the destination is not allowed, no SMTP server is set): not retried."""


def rule_json(rule: AlertRule) -> dict[str, Any]:
    quiet = {"start": rule.quiet_start, "end": rule.quiet_end} if rule.quiet_start and rule.quiet_end else None
    return {"id": rule.id, "name": rule.name, "min_severity": rule.min_severity, "meter_id": rule.meter_id,
            "feeder_id": rule.feeder_id, "quiet_hours": quiet, "webhook_url": rule.webhook_url,
            "email_to": rule.email_to, "enabled": rule.enabled}


def alert_json(alert: Alert) -> dict[str, Any]:
    return {"id": alert.id, "rule_id": alert.rule_id, "rule_name": alert.rule_name, "anomaly_id": alert.anomaly_id,
            "incident_id": alert.incident_id, "incident_event": alert.incident_event,
            "meter_id": alert.meter_id, "channel": alert.channel, "status": alert.status, "detail": alert.detail,
            "sent_at": iso(alert.sent_at_ms), "attempts": alert.attempts, "next_attempt_at": iso(alert.next_attempt_ms)}


def backoff_seconds(attempts: int, first: float, most: float) -> float:
    """Wait before the next try after ``attempts`` failed ones: ``first``, doubling, at most ``most``."""
    return min(most, first * 2 ** max(0, attempts - 1))


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


def incident_email_text(rule: AlertRule, incident: dict[str, Any]) -> tuple[str, str]:
    event = incident["alert_event"]
    what = {"opened": "opened", "closed": "closed"}.get(event, f"escalated to {event.partition(':')[2]}")
    subject = (f"[WattsUp] {incident['kind']} incident {what} on meter {incident['meter_id']} "
               f"(feeder {incident['feeder_id']})")
    lines = [f"Rule: {rule.name}", f"Incident: {incident['incident_id']} ({incident['status']})",
             f"Meter: {incident['meter_id']}  Feeder: {incident['feeder_id']}  Kind: {incident['kind']}",
             f"Started: {incident['started']}  Last anomaly: {incident['last_seen']}  Ended: {incident['ended'] or '-'}",
             f"Peak severity: {incident['peak_severity']}  Anomalous readings: {incident['readings']}",
             f"Energy against the usual: {incident['energy_delta_kwh']:+.3f} kWh"]
    lines += ["", "Why (worst reading):"] + [f"  - {c['text']}" for c in incident.get("causes") or []]
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


ANOMALY, INCIDENT_EVENT = "anomaly", "incident event"
"""What the dispatcher checks, each behind its own cursor: an anomaly (``id``) or an incident event (``event_id``)."""


def _subject_key(subject: dict[str, Any]) -> tuple[str, int]:
    if "alert_event" in subject:
        return INCIDENT_EVENT, int(subject["event_id"])
    return ANOMALY, int(subject["id"])


class AlertDispatcher:
    """Matches incident events and anomalies to rules in a background thread; :meth:`submit` never blocks."""

    def __init__(self, settings: DashboardSettings, sessions: sessionmaker[Session], metrics: DashboardMetrics) -> None:
        self.settings = settings
        self.sessions = sessions
        self.metrics = metrics
        self.zone = ZoneInfo(settings.timezone)
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None
        self.processed = 0
        self._retrying: dict[tuple[str, int], tuple[dict[str, Any], int, float]] = {}
        """Checks that failed: (what, id) -> (subject, attempts, when to try again, monotonic)."""
        self._highest_seen = {ANOMALY: 0, INCIDENT_EVENT: 0}
        self._cursor = {ANOMALY: 0, INCIDENT_EVENT: 0}
        self._next_delivery_due: float | None = time.monotonic()
        self.webhooks = WebhookPolicy(settings.webhook_allowed_hosts)
        # No redirects (a 3xx could point anywhere) and no proxy from the environment (it would see the secrets).
        self._http = httpx.Client(timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False)

    def start(self) -> None:
        self._catch_up()
        self._thread = threading.Thread(target=self._run, name="alert-dispatcher", daemon=True)
        self._thread.start()

    def _catch_up(self) -> None:
        """Queue the anomalies and incident events stored after the last ones checked (e.g. just before a crash).

        On a new database the cursors start at the newest of each: rules apply to what is stored from
        now on, not to history.
        """
        with self.sessions.begin() as session:
            cursor = session.get(AlertCursor, 1)
            if cursor is None:
                newest = session.scalar(select(func.max(Anomaly.id))) or 0
                newest_event = session.scalar(select(func.max(IncidentEvent.id))) or 0
                # replicas starting together on a new database: the first one's row stands
                session.execute(_insert(session, AlertCursor)
                                .values(id=1, last_anomaly_id=newest, last_incident_event_id=newest_event)
                                .on_conflict_do_nothing(index_elements=["id"]))
                self._cursor = {ANOMALY: newest, INCIDENT_EVENT: newest_event}
                self._highest_seen = dict(self._cursor)
                return
            self._cursor = {ANOMALY: cursor.last_anomaly_id, INCIDENT_EVENT: cursor.last_incident_event_id}
            self._highest_seen = dict(self._cursor)
            pending = [anomaly_json(a) for a in session.scalars(
                select(Anomaly).where(Anomaly.id > cursor.last_anomaly_id).order_by(Anomaly.id).limit(CATCH_UP_LIMIT))]
            events = incident_events_json(session, IncidentEvent.id > cursor.last_incident_event_id,
                                          limit=CATCH_UP_LIMIT)
        if pending or events:
            log.info("checking %d anomalies and %d incident events stored after the last ones checked against the "
                     "alert rules", len(pending), len(events))
            self.submit([*events, *pending])

    def _advance_cursor(self, what: str, checked_id: int) -> None:
        column = AlertCursor.last_anomaly_id if what == ANOMALY else AlertCursor.last_incident_event_id
        with self.sessions.begin() as session:
            session.execute(update(AlertCursor).where(AlertCursor.id == 1, column < checked_id)
                            .values({column: checked_id}))

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(30)
        self._http.close()

    def submit(self, subjects: list[dict[str, Any]]) -> None:
        """Queue stored anomalies and incident events (:attr:`dashboard.store.StoredBatch.incident_events`)
        for the rules; a full queue loses nothing for good (the cursor stays behind them until a restart)."""
        if not subjects:
            return
        try:
            self._queue.put_nowait(subjects)
        except queue.Full:
            log.error("alert queue full: %d anomalies or incident events not checked against alert rules until "
                      "the next start", len(subjects))

    @property
    def checks_awaiting_retry(self) -> int:
        """Anomalies and incident events whose check against the rules failed and will be tried again."""
        return len(self._retrying)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted so far has been handled once (tests use it); retries may follow."""
        done = threading.Event()
        self._queue.put([{"__marker__": done}])
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=self._seconds_to_next_retry())
            except queue.Empty:
                item = []
            if item is None:
                return
            for subject in item:
                if "__marker__" in subject:
                    subject["__marker__"].set()
                    continue
                self._check(subject)
            self._retry_due_checks()
            try:
                self._retry_due_deliveries()
            except Exception:  # noqa: BLE001 - the database may be away; the rows stay due and are tried again
                log.exception("could not retry the failed alert deliveries")
            self._advance_cursor_safely()

    def _check(self, subject: dict[str, Any]) -> None:
        """Check one anomaly or incident event against the rules; on failure keep it for a retry (never lose it)."""
        key = _subject_key(subject)
        what, ident = key
        self._highest_seen[what] = max(self._highest_seen[what], ident)
        try:
            if what == ANOMALY:
                self.process(subject)
            else:
                self.process_incident_event(subject)
        except Exception:  # noqa: BLE001 - one bad record, rule or a locked database must not stop alerting
            attempts = self._retrying.get(key, (subject, 0, 0.0))[1] + 1
            wait = backoff_seconds(attempts, CHECK_RETRY_FIRST_SECONDS, CHECK_RETRY_MAX_SECONDS)
            self._retrying[key] = (subject, attempts, time.monotonic() + wait)
            self.metrics.alert_check_failures.inc()
            log.warning("checking %s %s against the alert rules failed (attempt %d); trying again in %.0f s",
                        what, ident, attempts, wait, exc_info=attempts == 1)
        else:
            if self._retrying.pop(key, None) is not None:
                log.info("%s %s checked against the alert rules after earlier failures", what, ident)
            self.processed += 1
        self.metrics.alerts_awaiting_retry.labels(what="check").set(len(self._retrying))

    def _retry_due_checks(self) -> None:
        now = time.monotonic()
        for key, (subject, _attempts, due) in sorted(self._retrying.items()):
            if due <= now:
                self._check(subject)

    def _advance_cursor_safely(self) -> None:
        """Move each cursor up to the newest record checked, but never past one still waiting for a retry:
        a restart then checks that one again (and, harmlessly, the ones after it)."""
        for what in (ANOMALY, INCIDENT_EVENT):
            waiting = [ident for kind, ident in self._retrying if kind == what]
            safe = min(waiting) - 1 if waiting else self._highest_seen[what]
            if safe <= self._cursor[what]:
                continue
            try:
                self._advance_cursor(what, safe)
                self._cursor[what] = safe
            except Exception:  # noqa: BLE001 - tried again after the next batch; worst case re-checked at restart
                log.warning("could not advance the alert cursor (tried again later)", exc_info=True)

    def _seconds_to_next_retry(self) -> float:
        due = [d for _, _, d in self._retrying.values()]
        if self._next_delivery_due is not None:
            due.append(self._next_delivery_due)
        if not due:
            return IDLE_WAKE_SECONDS
        return min(IDLE_WAKE_SECONDS, max(0.01, min(due) - time.monotonic()))

    def _retry_due_deliveries(self) -> None:
        """Send again the deliveries marked ``retrying`` whose time has come (the rows survive restarts)."""
        now = now_ms()
        with self.sessions() as session:
            due = session.execute(
                select(Alert, AlertRule, Anomaly, Incident).join(AlertRule, AlertRule.id == Alert.rule_id)
                .outerjoin(Anomaly, Anomaly.id == Alert.anomaly_id)
                .outerjoin(Incident, Incident.incident_id == Alert.incident_id)
                .where(Alert.status == "retrying", Alert.next_attempt_ms <= now).order_by(Alert.next_attempt_ms)
                .limit(100)).all()
            waiting = session.scalar(select(func.count()).select_from(Alert).where(Alert.status == "retrying")) or 0
            next_due = session.scalar(select(func.min(Alert.next_attempt_ms)).where(Alert.status == "retrying"))
        self.metrics.alerts_awaiting_retry.labels(what="delivery").set(waiting)
        self._next_delivery_due = None if next_due is None else time.monotonic() + max(0, next_due - now) / 1000
        for alert, rule, anomaly, incident in due:
            target = rule.webhook_url if alert.channel == "webhook" else rule.email_to
            if not target:
                continue
            if anomaly is not None:
                subject = anomaly_json(anomaly)
            elif incident is not None:
                subject = {**incident_json(incident), "alert_event": alert.incident_event}
            else:
                continue
            self._deliver(alert.id, alert.attempts + 1, rule, subject, alert.channel, target)
        if due:
            self._next_delivery_due = time.monotonic()  # look again soon: the batch may have been cut at 100

    # -- one anomaly or incident event --------------------------------------------------
    def process(self, anomaly: dict[str, Any]) -> None:
        if anomaly.get("suppressed_by") or self.settings.alert_on == "incidents":
            return  # suppressed by operator feedback (kept and counted), or rules fire on incidents, not readings
        self._apply_rules(anomaly, anomaly)

    def process_incident_event(self, event: dict[str, Any]) -> None:
        """An incident's opening, escalation or closing; rules compare its peak severity with theirs."""
        if self.settings.alert_on != "incidents":
            return
        self._apply_rules({**event, "severity": event["peak_severity"], "id": None}, event)

    def _apply_rules(self, matched: dict[str, Any], subject: dict[str, Any]) -> None:
        with self.sessions() as session:
            rules = [r for r in session.scalars(select(AlertRule).where(AlertRule.enabled.is_(True)))
                     if rule_matches(r, matched)]
        for rule in rules:
            for channel, target in (("webhook", rule.webhook_url), ("email", rule.email_to)):
                if target:
                    self._decide_and_send(rule, subject, channel, target)

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
                           Alert.status.in_(("sent", "failed", "pending", "retrying")), Alert.sent_at_ms > now - HOUR_MS))
                if (recent or 0) >= self.settings.alert_rate_per_hour:
                    status = "suppressed"
                    detail = (f"rate limit: {self.settings.alert_rate_per_hour} alerts per hour for meter "
                              f"{anomaly['meter_id']} reached")
            if "alert_event" in anomaly:  # an incident's event: once per rule, incident, event and channel
                stmt = (_insert(session, Alert).values(
                    rule_id=rule.id, rule_name=rule.name, anomaly_id=None, incident_id=anomaly["incident_id"],
                    incident_event=anomaly["alert_event"], meter_id=anomaly["meter_id"], channel=channel,
                    status=status, detail=detail, sent_at_ms=now)
                    .on_conflict_do_nothing(index_elements=["rule_id", "incident_id", "incident_event", "channel"])
                    .returning(Alert.id))
            else:
                stmt = (_insert(session, Alert).values(
                    rule_id=rule.id, rule_name=rule.name, anomaly_id=anomaly["id"], meter_id=anomaly["meter_id"],
                    channel=channel, status=status, detail=detail, sent_at_ms=now)
                    .on_conflict_do_nothing(index_elements=["rule_id", "anomaly_id", "channel"]).returning(Alert.id))
            alert_id = session.scalar(stmt)
        return alert_id, status, detail

    def _decide_and_send(self, rule: AlertRule, anomaly: dict[str, Any], channel: str, target: str) -> None:
        alert_id, status, _detail = self._claim(rule, anomaly, channel)
        if alert_id is None:
            log.debug("rule %s already alerted on %s %s via %s", rule.id, *_subject_key(anomaly), channel)
            return
        if status == "pending":
            self._deliver(alert_id, 1, rule, anomaly, channel, target)
        else:
            self.metrics.alerts.labels(channel=channel, status=status).inc()

    def _deliver(self, alert_id: int, attempt: int, rule: AlertRule, anomaly: dict[str, Any], channel: str,
                 target: str) -> None:
        """Attempt number ``attempt`` of one delivery; records sent, retrying (with its next time) or failed."""
        next_attempt_ms = None
        try:
            detail = self._send_webhook(rule, anomaly, target) if channel == "webhook" \
                else self._send_email(rule, anomaly, target)
            status = "sent"
        except Exception as exc:  # noqa: BLE001 - every delivery failure is recorded, never raised
            detail = failure_detail(exc)
            # The log (operators only) gets the error; the stored detail, which the API shows, gets the
            # generic text: the URL carries secrets, and the low-level error text would tell a rule's
            # author what listens where (a port scanner).
            log.warning("alert %s of rule %s via %s failed (attempt %d): %s: %s", alert_id, rule.id, channel,
                        attempt, type(exc).__name__, str(exc)[:300])
            if attempt < self.settings.alert_delivery_attempts and type(exc).__name__ not in PERMANENT:
                status = "retrying"
                wait = backoff_seconds(attempt, self.settings.alert_retry_first_seconds,
                                       self.settings.alert_retry_max_seconds)
                next_attempt_ms = now_ms() + int(wait * 1000)
                detail = f"{detail}; attempt {attempt} of {self.settings.alert_delivery_attempts}, next in {wait:.0f} s"
                if self._next_delivery_due is None or time.monotonic() + wait < self._next_delivery_due:
                    self._next_delivery_due = time.monotonic() + wait
            else:
                status = "failed"
        with self.sessions.begin() as session:
            session.execute(update(Alert).where(Alert.id == alert_id).values(
                status=status, detail=detail, sent_at_ms=now_ms(), attempts=attempt, next_attempt_ms=next_attempt_ms))
        self.metrics.alerts.labels(channel=channel, status=status).inc()

    def _send_webhook(self, rule: AlertRule, anomaly: dict[str, Any], url: str) -> str:
        destination = self.webhooks.check(url)  # again now: the name may resolve elsewhere than at creation
        if "alert_event" in anomaly:
            incident = {k: v for k, v in anomaly.items() if k not in ("alert_event", "event_id")}
            payload = {"rule": {"id": rule.id, "name": rule.name}, "event": anomaly["alert_event"], "incident": incident}
        else:
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
        subject, body = incident_email_text(rule, anomaly) if "alert_event" in anomaly else email_text(rule, anomaly)
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
