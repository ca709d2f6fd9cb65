"""Pydantic models of the API's answers, for the OpenAPI document.

The endpoints build their JSON directly (a page of a thousand anomalies or a million-point upload
series is not worth validating again on the way out); these models describe that JSON, and
``tests/dashboard`` checks real answers against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel as _PydanticModel
from pydantic import ConfigDict, Field

Severity = Literal["INFO", "WARNING", "CRITICAL"]


class BaseModel(_PydanticModel):
    """Extra fields forbidden: the tests validate real answers with these, so the document cannot drift."""

    model_config = ConfigDict(extra="forbid")


class Cause(BaseModel):
    feature: str
    contribution: float = Field(description="Share of the score attributed to the feature.")
    text: str = Field(description="Plain-language sentence for an operator.")


class UploadAnomaly(BaseModel):
    """An anomaly as the engine reports it (an upload's, not stored: no id)."""

    meter_id: str
    feeder_id: str
    timestamp: str = Field(description="ISO 8601 UTC, e.g. 2026-11-25T08:00:00Z")
    observed: float
    baseline: float | None = Field(description="The meter's usual kWh for this hour of the week, from its own history; "
                                               "null only for anomalies stored from schema version 1.")
    expected: float | None = Field(description="The forecast's expected kWh; null when no forecast covers the reading "
                                               "(uploads never have one).")
    lower: float | None = Field(description="Lower edge of the forecast band, kWh; null without a forecast.")
    upper: float | None = Field(description="Upper edge of the forecast band, kWh; null without a forecast.")
    residual: float | None = Field(description="observed - expected, kWh; null without a forecast.")
    band_residual: float | None = Field(description="Residual over half the forecast band's width: beyond 1 or -1 the "
                                                    "reading is outside the band; null without a forecast.")
    score: float
    severity: Severity
    kind: str | None
    causes: list[Cause]
    model_version: str
    detected_at: str


class Anomaly(UploadAnomaly):
    """A stored anomaly."""

    id: int
    suppressed_by: str | None = Field(None, description="feedback_scope or feedback_severity when operator feedback "
                                                        "suppressed it (listed only with include_suppressed); null: it stands.")


class AnomalyPage(BaseModel):
    items: list[Anomaly]
    total: int
    limit: int
    offset: int


class MeterItem(BaseModel):
    meter_id: str
    feeder_id: str
    last_reading_at: str | None
    anomalies_24h: int


class MeterList(BaseModel):
    items: list[MeterItem]


class ReadingPoint(BaseModel):
    timestamp: str
    kwh: float


class ForecastPoint(BaseModel):
    timestamp: str
    expected: float
    lower: float
    upper: float


class Series(BaseModel):
    key: str
    readings: list[ReadingPoint]
    forecast: list[ForecastPoint]
    anomalies: list[Anomaly]


class SeveritiesCount(BaseModel):
    INFO: int
    WARNING: int
    CRITICAL: int


class Summary(BaseModel):
    meters: int
    feeders: int
    readings_last_hour: int
    anomalies_24h: SeveritiesCount
    latest_reading_at: str | None
    model_version: str | None


class ModelList(BaseModel):
    items: list[dict] = Field(description="Model metadata (models.artifacts.ModelMetadata), newest first.")


class FieldError(BaseModel):
    field: str
    message: str


class RejectedReading(BaseModel):
    index: int
    errors: list[FieldError]


class DuplicateReading(BaseModel):
    index: int
    of: int | None = Field(description="The reading of this request it repeats; null when it repeats a stored one.")
    action: Literal["dropped", "already stored"]
    detail: str


class IngestResult(BaseModel):
    accepted: int = Field(description="Readings produced to the readings topic and acknowledged.")
    rejected: list[RejectedReading] = Field(description="Invalid readings, and repeats that conflict with a kept or "
                                                       "stored one (sent to the dead-letter topic).")
    duplicates: list[DuplicateReading] = Field(default=[], description="Exact repeats, not sent again.")


class RejectedRow(BaseModel):
    row: int = Field(description="1-based line number in the file (the header is line 1).")
    reason: str


class UploadPoint(BaseModel):
    timestamp: str
    kwh: float
    baseline: float = Field(description="The meter's usual kWh for this slot as the detector saw it (not a forecast).")
    score: float
    flag: Literal[0, 1]
    severity: Severity | None


class DuplicateRow(BaseModel):
    row: int = Field(description="Line number of the repeat.")
    of_row: int = Field(description="Line number of the row it repeats, which is the one scored.")
    meter_id: str
    timestamp: str
    kwh: float
    action: Literal["dropped", "rejected"] = Field(description="dropped: same kWh; rejected: another kWh.")
    reason: str


class DetectResult(BaseModel):
    model_version: str
    readings: int = Field(description="Readings scored (repeats of a meter and time not counted).")
    rejected_rows: list[RejectedRow]
    duplicates_dropped: int = Field(description="Exact repeats of an earlier row (same meter, time and kWh).")
    duplicates_rejected: int = Field(description="Rows repeating an earlier row's meter and time with another kWh.")
    duplicate_rows: list[DuplicateRow] = Field(description="What happened to each repeat (the first 1000).")
    anomalies: list[UploadAnomaly]
    series: dict[str, list[UploadPoint]]


class SensitivitySettings(BaseModel):
    fleet: float
    meters: dict[str, float]


class QuietHoursOut(BaseModel):
    start: str
    end: str


class Rule(BaseModel):
    id: int
    name: str
    min_severity: Severity
    meter_id: str | None
    feeder_id: str | None
    quiet_hours: QuietHoursOut | None
    webhook_url: str | None
    email_to: str | None
    enabled: bool


class RuleList(BaseModel):
    items: list[Rule]


class AlertItem(BaseModel):
    id: int
    rule_id: int
    rule_name: str
    anomaly_id: int | None = Field(description="The anomaly alerted; null for an incident's alert.")
    incident_id: str | None = Field(None, description="The incident alerted (WATTSUP_DASHBOARD_ALERT_ON=incidents).")
    incident_event: str | None = Field(None, description="opened, escalated:<severity> or closed.")
    meter_id: str
    channel: Literal["webhook", "email"]
    status: Literal["sent", "failed", "suppressed", "pending", "retrying"] = Field(
        description="retrying: a delivery failed and is tried again at next_attempt_at; failed: given up.")
    detail: str
    sent_at: str = Field(description="Time of the latest attempt (or of the decision to suppress).")
    attempts: int
    next_attempt_at: str | None


class AlertPage(BaseModel):
    items: list[AlertItem]
    total: int
    limit: int
    offset: int
    checks_awaiting_retry: int = Field(description="Anomalies whose check against the rules failed (e.g. the "
                                                   "database was locked) and is retried with backoff.")


class SessionState(BaseModel):
    authenticated: bool
    name: str | None
    read_public: bool | None = None


class Detail(BaseModel):
    detail: str


class DetectRefusal(BaseModel):
    """Why an upload could not be scored, with the rows already found bad (at most 1,000)."""

    detail: str
    rejected_rows: list[RejectedRow] = []


def documented(model: type[_PydanticModel], errors: dict[int, str] | None = None, *, status: int = 200,
               refusals: dict[int, tuple[type[BaseModel], str]] | None = None) -> dict[str, Any]:
    """Route arguments that document ``model`` as the answer without validating the returned JSON again;
    ``errors`` answer a :class:`Detail`, ``refusals`` a model of their own."""
    responses: dict[int | str, dict[str, Any]] = {status: {"model": model, "description": "OK"}}
    for code, text in (errors or {}).items():
        responses[code] = {"model": Detail, "description": text}
    for code, (refusal, text) in (refusals or {}).items():
        responses[code] = {"model": refusal, "description": text}
    return {"response_model": None, "responses": responses}


class Incident(BaseModel):
    """An incident: a meter's consecutive anomalies of one kind, as its newest record says."""

    incident_id: str
    meter_id: str
    feeder_id: str
    kind: str
    status: Literal["open", "closed"]
    event: str = Field(description="What its newest record reported: opened, updated, escalated or closed.")
    started: str = Field(description="Timestamp of its first anomalous reading (ISO 8601 UTC).")
    last_seen: str
    ended: str | None = Field(description="When it closed (data time); null while open.")
    closed_by: str | None = Field(description="recovered or operator; null while open.")
    interval_seconds: int
    duration_seconds: float = Field(description="From the start of its first anomalous interval to its close (or its "
                                                "latest anomaly while open).")
    peak_severity: Severity
    readings: int
    energy_delta_kwh: float = Field(description="Observed minus baseline over its anomalous readings: positive an "
                                                "excess, negative a shortfall (kWh).")
    worst_timestamp: str
    worst_score: float
    causes: list[Cause]
    revision: int


class IncidentPage(BaseModel):
    items: list[Incident]
    total: int
    limit: int
    offset: int


class IncidentDetail(BaseModel):
    incident: Incident
    anomalies: list[Anomaly] = Field(description="Its anomalous readings (the red points of its chart).")


class FeedbackMarkOut(BaseModel):
    """A mark as written to the feedback topic."""

    meter_id: str
    kind: str
    verdict: Literal["confirmed", "false_alarm", "expected"]
    incident_id: str | None
    expires_at: str | None = Field(description="End of the scope (data time); null: until revoked.")
    close_incident: bool
    revoked: bool
    operator: str | None
    note: str | None
